"""train: LoRA supervised fine-tuning of the base model on the SFT split (TRL SFTTrainer + PEFT).

On CPU it trains with plain PyTorch; with a CUDA GPU and Unsloth installed (requirements-gpu.txt) and
`train.use_unsloth: auto`, it loads the model through Unsloth. The script is an ordinary Accelerate
program, so several processes need no code change, only the launcher (the main process alone tracks and
writes; `batch_size` is per process):

    accelerate launch --multi_gpu --num_processes 2 stages/train.py --data data/sft --base models/base \
        --out models/adapter --metrics metrics/train.json --plot plots/train_loss.csv
    torchrun --nproc_per_node 2 stages/train.py ...      # the same on CPU processes (gloo)

Usage: python stages/train.py --data data/sft --base models/base --out models/adapter --metrics metrics/train.json --plot plots/train_loss.csv
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from airflow_net.params import load_params
from airflow_net.utils import atomic_path, banner, read_json, stage_entry, write_json, write_meta, write_text

log = logging.getLogger("stages.train")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True, help="SFT splits folder (train.jsonl, val.jsonl)")
    ap.add_argument("--base", required=True, help="base model folder (HF format)")
    ap.add_argument("--out", required=True, help="output folder: LoRA adapter + tokenizer + meta.json")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plot", required=True, help="loss per step (CSV: step,train_loss,eval_loss)")
    args = ap.parse_args()
    p = load_params(args.params)
    resolved = {"seed": p.seed, "train": p.train.model_dump(), "lora": p.lora.model_dump()}
    log.info("train params: %s", resolved)

    # Unsloth, when used, must be imported before transformers builds a model: decide first.
    from airflow_net.models.sft import history_csv, load_sft_rows, resolve_unsloth, train_lora

    use_unsloth = resolve_unsloth(p.train.use_unsloth)
    import torch

    from airflow_net import tracking

    if p.train.num_threads:
        torch.set_num_threads(p.train.num_threads)
    # torchrun / `accelerate launch` set RANK on every process; the main process alone tracks and writes.
    main_process = int(os.environ.get("RANK", "0")) == 0
    data = Path(args.data)
    train_rows = load_sft_rows(data / "train.jsonl")
    val_path = data / "val.jsonl"
    val_rows = load_sft_rows(val_path) if val_path.is_file() else []
    if p.train.max_eval_examples is not None and len(val_rows) > p.train.max_eval_examples:
        # prepare shuffled the split: the first N are a fair sample, and the same N on every run
        log.info("evaluating on %d of %d val conversations (train.max_eval_examples)", p.train.max_eval_examples,
                 len(val_rows))
        val_rows = val_rows[: p.train.max_eval_examples]
    banner(f"LoRA SFT: {len(train_rows)} train / {len(val_rows)} val conversations"
           f"{', Unsloth' if use_unsloth else ''}, {torch.get_num_threads()} threads")

    kwargs = dict(train=p.train, lora=p.lora, seed=p.seed, use_unsloth=use_unsloth)
    if not main_process:  # under `accelerate launch`: take part in training, write nothing
        with tempfile.TemporaryDirectory(prefix="airflow-net-rank-") as scratch:
            train_lora(args.base, train_rows, val_rows, Path(scratch) / "adapter", **kwargs)
        return
    with tracking.run("train", resolved) as t:
        with atomic_path(args.out) as tmp:
            result = train_lora(args.base, train_rows, val_rows, tmp,
                                on_metrics=lambda m, step: t.log_metrics(m, step=step), **kwargs)
            banner("write")
            base_meta = Path(args.base) / "meta.json"
            write_meta(
                tmp, params=resolved, inputs={"base": args.base, "data": args.data},
                base_model=read_json(base_meta).get("model") if base_meta.is_file() else str(args.base),
            )  # run facts (threads, seconds, tokens/s) go to the metrics file: the adapter stays byte-stable
        # what prepare priced this run at: its next run scales these seconds to estimate a new max_seq_len
        cost = read_json(Path(args.data) / "meta.json").get("train_cost", {}) if (Path(args.data) / "meta.json").is_file() else {}
        metrics = result.metrics() | {"threads": torch.get_num_threads(), "max_seq_len": p.train.max_seq_len,
                                      "cost_per_step": cost.get("cost_per_step"), "tokens_per_step": cost.get("tokens_per_step")}
        write_text(args.plot, history_csv(result.history))
        write_json(args.metrics, metrics)
        t.log_metrics(metrics)
    log.info("train loss %s -> %s, eval loss %s -> %s, %d steps, %.0f tokens/s; adapter in %s",
             _f(metrics["train_loss_first"]), _f(metrics["train_loss_last"]), _f(metrics["eval_loss_first"]),
             _f(metrics["eval_loss_last"]), metrics["steps"], metrics["tokens_per_s"], args.out)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
