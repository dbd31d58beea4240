"""rewrite_train: fine-tune the reformulator (Seq2SeqTrainer), eval_loss + ROUGE-L on val at each evaluation.

Usage: python stages/rewrite_train.py --data data/rewrite --base models/rewrite/base --out models/rewrite/finetuned --metrics metrics/rewrite_train.json --plot plots/rewrite_train.csv
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch

from airflow_net import tracking
from airflow_net.params import load_params
from airflow_net.rewrite.model import save_model
from airflow_net.rewrite.train import finetune
from airflow_net.utils import atomic_path, banner, read_jsonl, stage_entry, write_json, write_meta

log = logging.getLogger("stages.rewrite_train")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plot", required=True)
    args = ap.parse_args()
    p = load_params(args.params)
    tp = p.rewrite.train
    log.info("rewrite.train: %s", tp.model_dump())
    if tp.num_threads:
        torch.set_num_threads(tp.num_threads)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, set_seed

    set_seed(p.seed)
    tok = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.base)
    train, val = read_jsonl(Path(args.data) / "train.jsonl"), read_jsonl(Path(args.data) / "val.jsonl")
    banner(f"fine-tuning ({tp.method}): {len(train)} pairs, {tp.max_steps} steps of {tp.batch_size}")
    t0 = time.time()
    with tracking.run("rewrite_train", {"rewrite.train": tp.model_dump()}) as t, \
            tempfile.TemporaryDirectory() as work:
        model, curve = finetune(model, tok, train, val, tp, p.seed, Path(work), tracker=t)
    secs = time.time() - t0
    with atomic_path(args.out) as tmp:
        save_model(model, tok, tmp)
        # the fast tokenizer saves tokenizer.json alone; llama.cpp's and CTranslate2's converters need spiece.model
        spm = Path(args.base) / "spiece.model"
        if spm.is_file() and not (tmp / "spiece.model").is_file():
            shutil.copyfile(spm, tmp / "spiece.model")
        write_meta(tmp, params={"seed": p.seed, "rewrite.train": tp.model_dump()},
                   inputs={"data": args.data, "base": args.base},
                   # the curve without its timings: those are run facts (the plot CSV keeps them)
                   curve=[{k: v for k, v in row.items() if k != "seconds"} for row in curve])
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    with open(args.plot, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(curve[0]))
        w.writeheader()
        w.writerows(curve)
    last = curve[-1]
    write_json(args.metrics, {"val_eval_loss": last["eval_loss"], "val_rougeL": last["val_rougeL"],
                              "val_exact": last["val_exact"], "steps": last["step"], "seconds": round(secs, 1),
                              "threads": torch.get_num_threads()})
    log.info("wrote %s: val eval_loss %.3f, ROUGE-L %.3f", args.out, last["eval_loss"], last["val_rougeL"])


if __name__ == "__main__":
    main()
