"""rewrite_evaluate: eval_loss, ROUGE-L, exact match and structural F1 on the test split, base vs fine-tuned.

Usage: python stages/rewrite_evaluate.py --data data/rewrite --base models/rewrite/base --finetuned models/rewrite/finetuned --runtimes models/rewrite/runtimes --out reports/rewrite --metrics metrics/rewrite_eval.json
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import torch

from airflow_net import tracking
from airflow_net.params import load_params
from airflow_net.rewrite.evaluate import eval_loss, score
from airflow_net.rewrite.snap import snap
from airflow_net.rewrite.train import generate
from airflow_net.utils import atomic_path, banner, read_jsonl, stage_entry, write_json

log = logging.getLogger("stages.rewrite_evaluate")
HEADLINE = ("eval_loss", "rougeL", "exact_match", "structural_f1", "parse_rate")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--finetuned", required=True)
    ap.add_argument("--runtimes", required=True, help="rewrite_export's folder: finetuned_served uses rewrite.runtime")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    p = load_params(args.params)
    ep = p.rewrite.evaluate
    if ep.num_threads:
        torch.set_num_threads(ep.num_threads)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    rows = read_jsonl(Path(args.data) / "test.jsonl")[: ep.max_examples]
    metrics: dict = {}
    csv_rows: list[dict] = []
    for which, folder in (("base", args.base), ("finetuned", args.finetuned)):
        banner(f"{which}: {len(rows)} test pairs")
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSeq2SeqLM.from_pretrained(folder)
        preds = generate(model, tok, [r["query"] for r in rows], batch_size=ep.batch_size,
                         max_new_tokens=ep.max_new_tokens)
        loss = eval_loss(model, tok, rows, batch_size=ep.batch_size)
        metrics[which], per = score(preds, rows, loss)
        csv_rows += [{"model": which, **r} for r in per]
        log.info("%s: %s", which, metrics[which])
    if p.rewrite.snap:
        # the same answers mended and with the request's ids copied (rewrite/snap.py): what the templated
        # strategy, generate --rewrite and the chat CLI use; eval_loss is the model's, unchanged
        snapped = [snap(r["rewrite"], q["query"]) for r, q in zip(per, rows, strict=True)]
        metrics["finetuned_snapped"], per_s = score(snapped, rows, metrics["finetuned"]["eval_loss"])
        csv_rows += [{"model": "finetuned_snapped", **r} for r in per_s]
        log.info("finetuned_snapped: %s", metrics["finetuned_snapped"])
    if p.rewrite.beams > 1:
        # what the pipeline serves (generate --rewrite, the templated and reformulated strategies): the first of
        # rewrite.beams beams that parses, snapped
        from airflow_net.rewrite.reformulator import Reformulator

        banner(f"finetuned_served: {p.rewrite.runtime}, {p.rewrite.beams} beams, the first that parses"
               f"{', snapped' if p.rewrite.snap else ''}")
        # one thread, as the pipeline serves it (strategies, generate --rewrite): CTranslate2 at 2 threads was 20x
        # slower on this 2-core VM (docs/rewrite-runtimes.md)
        ref = Reformulator(args.finetuned, runtime=p.rewrite.runtime, exported=args.runtimes, threads=1,
                           max_new_tokens=ep.max_new_tokens, snap=p.rewrite.snap, beams=p.rewrite.beams)
        served = [ref(q["query"]) for q in rows]
        metrics["finetuned_served"], per_b = score(served, rows, metrics["finetuned"]["eval_loss"])
        csv_rows += [{"model": "finetuned_served", **r} for r in per_b]
        log.info("finetuned_served: %s", metrics["finetuned_served"])
    metrics["gain"] = {k: round(metrics["finetuned"][k] - metrics["base"][k], 4)
                       for k in HEADLINE if k in metrics["base"]}
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        with (tmp / "per_pair.csv").open("w", newline="") as f:
            keys = list(dict.fromkeys(k for r in csv_rows for k in r))
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(csv_rows)
    write_json(args.metrics, metrics)
    with tracking.run("rewrite_evaluate", {"rewrite.evaluate": ep.model_dump()}) as t:
        t.log_metrics({k: v for k, v in metrics.items()})
    log.info("wrote %s and %s/per_pair.csv", args.metrics, args.out)


if __name__ == "__main__":
    main()
