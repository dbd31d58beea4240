"""rewrite_export: the fine-tuned reformulator in every selected CPU runtime, each checked against PyTorch fp32.

Usage: python stages/rewrite_export.py --data data/rewrite --model models/rewrite/finetuned --out models/rewrite/runtimes --metrics metrics/rewrite_export.json

Runtimes are rewrite.runtimes x rewrite.quant (names <family>-<quant>). Each is exported into <out>/<name>/,
loaded, and decodes the same test pairs: its exact agreement with torch-fp32 and its ROUGE-L, exact match and
structural F1 go to the metrics. A runtime that cannot export or load is recorded with one line saying why;
the others go on.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from airflow_net import tracking
from airflow_net.params import load_params
from airflow_net.rewrite.export import compare, export_all
from airflow_net.utils import atomic_path, banner, read_jsonl, stage_entry, write_json, write_jsonl

log = logging.getLogger("stages.rewrite_export")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    p = load_params(args.params).rewrite
    names = p.runtime_names
    threads = p.export.threads or os.cpu_count() or 1
    rows = read_jsonl(Path(args.data) / "test.jsonl")[: p.export.compare_examples]
    with atomic_path(args.out) as tmp:
        banner(f"export: {', '.join(names)}")
        exported = export_all(names, args.model, tmp)
        banner(f"compare with torch-fp32 on {len(rows)} test pairs")
        results, outputs = compare(names, args.model, tmp, rows, threads=threads,
                                   max_new_tokens=p.export.max_new_tokens, exported=exported)
        write_jsonl(tmp / "outputs.jsonl", ({"uid": r.get("uid"), "query": r["query"], "gold": r["rewrite"],
                                             **{n: outs[i] for n, outs in outputs.items()}}
                                            for i, r in enumerate(rows)))
    metrics = {"n": len(rows), "runtimes": {n: {**exported.get(n, {}), **results.get(n, {})} for n in names}}
    loaded = [n for n in names if "skipped" not in metrics["runtimes"][n]]
    metrics["loaded"] = len(loaded)
    metrics["skipped"] = len(names) - len(loaded)
    write_json(args.metrics, metrics)
    with tracking.run("rewrite_export", {"rewrite.runtimes": p.runtimes, "rewrite.quant": p.quant,
                                         "rewrite.export": p.export.model_dump()}) as t:
        t.log_metrics(metrics)
    log.info("wrote %s (%d runtimes loaded, %d skipped) and %s", args.out, len(loaded), metrics["skipped"],
             args.metrics)


if __name__ == "__main__":
    main()
