"""strategies: one generation strategy on the comparison's requests (describer-written and person-style).

Usage: python stages/strategies.py --strategy direct --models models/gguf --data data/sft
       --rewrite models/rewrite/finetuned --out reports/strategies/direct --metrics metrics/strategies/direct.json

dvc.yaml runs it once per name in `strategies.names` (a foreach stage), on the same requests, with the fine-tuned
GGUF. The answers and their scores go to --out; the numbers, with what each request and each valid DAG cost
(seconds, tokens: run facts), go to --metrics only.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm import tqdm

from airflow_net.generate.compare import compare_requests, run_requests, summarise
from airflow_net.generate.strategies import STRATEGIES, dagcheck_judge, engine_backend
from airflow_net.params import load_params
from airflow_net.serve.generation import exported_gguf, load_gguf
from airflow_net.utils import UserError, atomic_path, banner, read_jsonl, stage_entry, write_json, write_jsonl

log = logging.getLogger("stages.strategies")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--strategy", required=True, choices=sorted(STRATEGIES))
    ap.add_argument("--models", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rewrite", required=True, help="the reformulator (templated reformulates with it)")
    ap.add_argument("--rewrite-runtimes", required=True, help="rewrite_export's folder (rewrite.runtime loads from it)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    p = load_params(args.params)
    g, s = p.generate, p.strategies
    log.info("strategy %s; strategies params: %s", args.strategy, s.model_dump())

    # the shared requests (strategies.sample DAGs) first; a strategy with an override goes on to more DAGs
    n_dags = s.sample_overrides.get(args.strategy, s.sample)
    requests = compare_requests(read_jsonl(Path(args.data) / "test.jsonl"), n_dags, p.seed)
    shared = {r["uid"] for r in requests[:s.sample] if r["group"] == "describer"}
    reformulate = None
    if args.strategy == "reformulated" or (args.strategy == "templated" and s.rewrite_model):
        if not (Path(args.rewrite) / "config.json").is_file():
            raise UserError(f"{args.rewrite}: no reformulator there (run `dvc repro rewrite_train`), or set "
                            "strategies.rewrite_model: false")
        from airflow_net.rewrite.reformulator import Reformulator

        reformulate = Reformulator(args.rewrite, runtime=p.rewrite.runtime, exported=args.rewrite_runtimes,
                                   max_new_tokens=p.rewrite.evaluate.max_new_tokens, snap=p.rewrite.snap,
                                   beams=p.rewrite.beams)

    gguf = exported_gguf(args.models, "finetuned", quantized=g.quantized)
    banner(f"{args.strategy}: {len(requests)} requests with {gguf.name}")
    n_parallel = g.best_of_n if "best_of_n" in args.strategy else 1
    engine = load_gguf(gguf, n_ctx=g.n_ctx, n_threads=g.n_threads, seed=p.seed, n_parallel=n_parallel)
    backend = engine_backend(engine, max_tokens=g.max_tokens, top_p=g.top_p, copy_ids=g.copy_ids)
    judges = {a: dagcheck_judge(a, autofix=g.autofix) for a in (2, 3)}
    with tqdm(total=len(requests), desc=args.strategy, unit="request", disable=None) as bar:
        rows = run_requests(args.strategy, requests, backend, judges, system_prompt=p.prepare.system_prompt,
                            progress=bar.update, n=g.best_of_n, rounds=g.repair_rounds,
                            temperature=g.sample_temperature, seed=p.seed, reformulate=reformulate,
                            fallback=g.templated_fallback)
    engine.close()
    metrics = {"strategy": args.strategy, "model": gguf.name,
               **summarise([r for r in rows if r["uid"] in shared], resamples=s.bootstrap_resamples, seed=p.seed)}
    if len(rows) > 2 * len(shared):
        metrics["wider"] = {"dags": len(rows) // 2, **summarise(rows, resamples=s.bootstrap_resamples, seed=p.seed)}
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        write_jsonl(tmp / "answers.jsonl", [{k: v for k, v in r.items() if k != "seconds"} for r in rows])
    write_json(args.metrics, metrics)
    a = metrics["all"]
    if "wider" in metrics:
        w = metrics["wider"]["all"]
        log.info("%s on %d test DAGs: valid %.3f [%.3f, %.3f], structural F1 %.3f [%.3f, %.3f]", args.strategy,
                 metrics["wider"]["dags"], w["valid_rate"], w["valid_rate_lo"], w["valid_rate_hi"],
                 w["structural_f1"], w["structural_f1_lo"], w["structural_f1_hi"])
    log.info("%s: valid %.3f [%.3f, %.3f], structural F1 %.3f, %.2f s per request, %s s per valid DAG; wrote %s",
             args.strategy, a["valid_rate"], a["valid_rate_lo"], a["valid_rate_hi"], a["structural_f1"],
             a["seconds_per_request"], a["seconds_per_valid_dag"], args.metrics)


if __name__ == "__main__":
    main()
