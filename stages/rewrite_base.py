"""rewrite_base: the reformulator's base model: a tiny T5 built and pre-trained here, or a HF T5 as it is.

Usage: python stages/rewrite_base.py --data data/rewrite --out models/rewrite/base --metrics metrics/rewrite_base.json --plot plots/rewrite_pretrain_loss.csv
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path

import torch

from airflow_net.params import load_params
from airflow_net.rewrite.model import build_tiny, pretrain, save_model, train_tokenizer
from airflow_net.utils import atomic_path, banner, read_jsonl, stage_entry, write_json, write_meta

log = logging.getLogger("stages.rewrite_base")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plot", required=True)
    args = ap.parse_args()
    p = load_params(args.params)
    mp = p.rewrite.model
    log.info("rewrite.model: %s", mp.model_dump())
    if mp.num_threads:
        torch.set_num_threads(mp.num_threads)
    t0 = time.time()
    curve: list[dict] = []
    with atomic_path(args.out) as tmp:
        if mp.name == "tiny":
            train = read_jsonl(Path(args.data) / "train.jsonl")
            # request text only (queries and canonical targets of the train split): val/test stay unseen
            texts = [r["query"] for r in train] + sorted({r["rewrite"] for r in train})
            banner(f"tokenizer: SentencePiece unigram, {mp.vocab_size} pieces asked")
            tok = train_tokenizer(texts, mp.vocab_size, tmp, p.seed)
            model = build_tiny(mp, len(tok), p.seed)
            n = sum(x.numel() for x in model.parameters())
            banner(f"span-corruption pre-training: {n / 1e6:.1f} M parameters, {mp.pretrain_steps} steps")
            curve = pretrain(model, tok, texts, mp, p.seed)
        else:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            banner(f"loading {mp.name}")
            tok = AutoTokenizer.from_pretrained(mp.name)
            model = AutoModelForSeq2SeqLM.from_pretrained(mp.name)
        save_model(model, tok, tmp)
        write_meta(tmp, params={"seed": p.seed, "rewrite.model": mp.model_dump()}, inputs={"data": args.data},
                   parameters=sum(x.numel() for x in model.parameters()))
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    with open(args.plot, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss"])
        w.writeheader()
        w.writerows(curve)
    write_json(args.metrics, {"parameters": sum(x.numel() for x in model.parameters()), "vocab": len(tok),
                              "pretrain_final_loss": curve[-1]["loss"] if curve else None,
                              "seconds": round(time.time() - t0, 1), "threads": torch.get_num_threads()})
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
