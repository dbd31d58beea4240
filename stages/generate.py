"""generate: every test instruction through the base and the fine-tuned GGUF with llama.cpp.

The requests run through the serving engine in-process, `generate.parallel` at a time (continuous batching).

Usage: python stages/generate.py --models models/gguf --data data/sft --out data/generated --metrics metrics/generate.json

The answers go to the output folder; how long they took (seconds, tokens/s) goes to the metrics file only, so
that the same models and requests write byte-identical outputs on every run.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

from tqdm import tqdm

from airflow_net.params import load_params
from airflow_net.serve.generation import chat_many, exported_gguf, load_gguf
from airflow_net.utils import (
    atomic_path,
    banner,
    read_jsonl,
    stage_entry,
    write_json,
    write_jsonl,
    write_meta,
)

log = logging.getLogger("stages.generate")
MODELS = ("base", "finetuned")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--models", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True, help="timings per model (run facts, kept out of --out)")
    args = ap.parse_args()
    p = load_params(args.params)
    g = p.generate
    log.info("generate params: %s", g.model_dump())

    test = read_jsonl(Path(args.data) / "test.jsonl")
    # A seeded sample spread over the test DAGs, the same for both models.
    test = sorted(test, key=lambda r: (r["uid"], r.get("variant") or ""))
    random.Random(p.seed).shuffle(test)
    test = test[: g.max_examples]

    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        used = {}
        timings: dict[str, dict] = {}
        for which in MODELS:
            path = exported_gguf(args.models, which, quantized=g.quantized)
            used[which] = path.name
            banner(f"{which}: {path.name}, {len(test)} requests")
            engine = load_gguf(path, n_ctx=g.n_ctx, n_threads=g.n_threads, seed=p.seed, n_parallel=g.parallel)
            convs = [[m for m in r["messages"] if m["role"] != "assistant"] for r in test]
            t0 = time.perf_counter()
            with tqdm(total=len(convs), desc=which, unit="dag", disable=None) as bar:
                outs = chat_many(engine, convs, max_tokens=g.max_tokens, temperature=g.temperature, top_p=g.top_p,
                                 seed=p.seed, progress=bar.update, copy_ids=g.copy_ids)
            wall = time.perf_counter() - t0
            engine.close()
            per_request = [out.pop("seconds") for out in outs]
            rows = [{"uid": r["uid"], "variant": r.get("variant"), "instruction": msgs[-1]["content"],
                     "spec": r.get("spec"), "airflow": r.get("airflow", 3), **out}
                    for r, msgs, out in zip(test, convs, outs, strict=True)]
            write_jsonl(tmp / f"{which}.jsonl", rows)
            n_tok = sum(x["completion_tokens"] for x in rows)
            timings[which] = {
                "requests": len(rows), "completion_tokens": n_tok, "seconds": round(wall, 2),
                "tokens_per_s": round(n_tok / max(1e-9, wall), 1),  # all slots together
                # the speed one answer is decoded at, in its slot (queueing excluded)
                "request_tokens_per_s": round(n_tok / sum(per_request), 1) if sum(per_request) else 0.0,
                "parallel": g.parallel,
            }
            log.info("%s: %d answers, %d tokens in %.1f s (%.0f tokens/s over %d slots)", which, len(rows), n_tok,
                     wall, n_tok / max(1e-9, wall), g.parallel)
        write_meta(tmp, params={"seed": p.seed, "generate": g.model_dump()}, models=used)
    write_json(args.metrics, timings)
    log.info("wrote generations to %s, timings to %s", args.out, args.metrics)


if __name__ == "__main__":
    main()
