"""evaluate: parse/valid rates, error classes, structural match and breakdowns, base vs fine-tuned, with 95%
bootstrap intervals and paired tests; with `evaluate.judge` on, an LLM judge's 1-5 instruction-following score.

Usage: python stages/evaluate.py --generated data/generated --sft data/sft --out reports/eval --metrics metrics/eval.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

from airflow_net.evaluate.summary import HEADLINE, MODELS, evaluate
from airflow_net.params import load_params
from airflow_net.utils import atomic_path, banner, read_jsonl, stage_entry, write_json

log = logging.getLogger("stages.evaluate")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--generated", required=True)
    ap.add_argument("--sft", help="the SFT data folder: its train.jsonl answers give the training syntax-error rate")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    e = load_params(args.params).evaluate

    generated = {which: read_jsonl(Path(args.generated) / f"{which}.jsonl") for which in MODELS}
    sft = read_jsonl(Path(args.sft) / "train.jsonl") if args.sft else None
    banner(f"judging {', '.join(f'{k}: {len(v)}' for k, v in generated.items())} DAGs against Airflow "
           f"{e.airflow_version}")
    judge = None
    if e.judge != "none":
        from functools import partial

        from airflow_net.evaluate.judge import run_judge

        judge = partial(run_judge, e=e)
    metrics, csv_rows, examples = evaluate(generated, e.airflow_version, e.bootstrap_resamples, e.bootstrap_seed,
                                           sft_train=sft, airflow_sample=e.airflow_sample, judge=judge)

    banner("write")
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        with (tmp / "per_dag.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
            w.writeheader()
            w.writerows(csv_rows)
        (tmp / "examples.json").write_text(json.dumps(examples, indent=2, sort_keys=True) + "\n")
    write_json(args.metrics, metrics)

    from airflow_net import tracking

    with tracking.run("evaluate", {"evaluate": e.model_dump()}) as t:
        t.log_metrics({k: metrics[k] for k in (*MODELS, "gain", "judge") if k in metrics})
        t.log_artifact(Path(args.out) / "per_dag.csv")
    log.info("gain: %s", {k: metrics["gain"][k] for k in HEADLINE})
    log.info("wrote %s and %s/{per_dag.csv,examples.json}", args.metrics, args.out)


if __name__ == "__main__":
    main()
