"""base: the base model, in Hugging Face format with a tokenizer that has a chat template.

`base.model: tiny` (the offline default) trains a byte-level BPE tokenizer on the corpus code, builds a
small Qwen2 model at the dimensions in `params.base` and pre-trains it on the corpus (CPU, seconds to
minutes). Any other value is a Hugging Face id (already in the local cache) or a local folder, loaded
with `from_pretrained` and saved as it is.

Usage: python stages/base.py --corpus data/corpus --out models/base --metrics metrics/base.json --plot plots/pretrain_loss.csv
"""

from __future__ import annotations

import argparse
import logging

from airflow_net import tracking
from airflow_net.models.base import (
    TINY,
    count_params,
    load_hf_base,
    make_tiny_base,
    save_base,
    train_split_conversations,
    train_split_sources,
)
from airflow_net.params import load_params
from airflow_net.utils import (
    UserError,
    atomic_path,
    banner,
    read_jsonl,
    stage_entry,
    write_json,
    write_meta,
    write_text,
)

log = logging.getLogger("stages.base")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--corpus", required=True, help="corpus folder (dags.jsonl); used by the tiny model only")
    ap.add_argument("--instructions", help="instruct stage's folder (pairs.jsonl): base.pretrain_requests > 0 only")
    ap.add_argument("--out", required=True, help="output folder: HF model + tokenizer + meta.json")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plot", required=True, help="pre-training loss per step (CSV: step,loss)")
    args = ap.parse_args()
    p = load_params(args.params)
    b = p.base
    log.info("base params: %s, seed=%d", b.model_dump(), p.seed)

    import torch

    if b.num_threads:
        torch.set_num_threads(b.num_threads)
    resolved = {"seed": p.seed, "base": b.model_dump(),
                "prepare": {"val_frac": p.prepare.val_frac, "test_frac": p.prepare.test_frac,
                            "system_prompt": p.prepare.system_prompt}}
    with tracking.run("base", resolved) as t:
        if b.model == TINY:
            banner("tokenizer + tiny Qwen2 pre-training on the corpus")
            # Only the DAGs of the train split: the val/test DAGs' code would otherwise be memorised here and
            # make the evaluation a recall test.
            sources, held_out = train_split_sources(args.corpus, p.prepare, p.seed)
            conversations = []
            if b.pretrain_requests:
                if not args.instructions:
                    raise UserError("base.pretrain_requests > 0 needs --instructions (the instruct stage's folder)")
                pairs = read_jsonl(f"{args.instructions}/pairs.jsonl")
                conversations = train_split_conversations(pairs, p.prepare, p.seed)
            tiny = make_tiny_base(sources, b, seed=p.seed, conversations=conversations,
                                  on_step=lambda s, loss: t.log_metrics({"loss": loss}, step=s))
            model, tokenizer, r = tiny.model, tiny.tokenizer, tiny.result
            metrics = {
                "model": TINY,
                "params": count_params(model),
                "vocab_size": len(tokenizer),
                "n_dags": tiny.n_dags,
                "pretrain_conversations": len(conversations),
                "held_out_dags": held_out,  # val + test DAGs, not pre-trained on
                "corpus_tokens": tiny.corpus_tokens,
                "tokens_per_dag": round(tiny.tokens_per_dag, 1),
                "pretrain_steps": len(r.losses),
                "pretrain_seq_len": r.seq_len,
                "initial_loss": r.initial_loss,
                "final_loss": r.final_loss,  # mean of the last 10 steps
                "tokens_per_s": round(r.tokens_per_s, 1),
                "seconds": round(r.seconds, 2),
                "threads": torch.get_num_threads(),
            }
            inputs = {"corpus": args.corpus}
        else:
            banner(f"load {b.model}")
            model, tokenizer = load_hf_base(b.model, dtype=b.dtype)
            r = None
            metrics = {"model": b.model, "params": count_params(model), "vocab_size": len(tokenizer)}
            inputs = {}

        banner("write")
        with atomic_path(args.out) as tmp:
            save_base(model, tokenizer, tmp, ours=b.model == TINY)
            write_meta(tmp, params=resolved, inputs=inputs, model=b.model, eos_token=tokenizer.eos_token)
        write_text(args.plot, "step,loss\n" + "".join(f"{i},{x:.6f}\n" for i, x in enumerate(r.losses if r else [], 1)))
        write_json(args.metrics, metrics)
        t.log_metrics({k: v for k, v in metrics.items() if k != "params"} | {"n_params": metrics["params"]})
        log.info("wrote %s (%s parameters) to %s", b.model, f"{metrics['params']:,}", args.out)


if __name__ == "__main__":
    main()
