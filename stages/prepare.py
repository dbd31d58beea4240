"""prepare: chat-format train/val/test splits by DAG, token-length statistics at train.max_seq_len.

Usage: python stages/prepare.py --pairs data/instructions --base models/base --out data/sft --metrics metrics/prepare.json
         [--last-train metrics/train.json]

It also prices the train stage at the chosen train.max_seq_len: tokens per step, a cost per step, and (given
the last train run's metrics) the expected time relative to it, with a warning when a knob makes it much slower.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

from airflow_net.data.prepare import (
    SLOWER_WARNING,
    SPLITS,
    compare_to_last_run,
    fitting,
    length_stats,
    repair_rows,
    split_by_dag,
    token_lengths,
    train_cost,
    train_rows,
)
from airflow_net.params import load_params
from airflow_net.utils import (
    UserError,
    atomic_path,
    banner,
    read_json,
    read_jsonl,
    stage_entry,
    write_json,
    write_jsonl,
    write_meta,
)

log = logging.getLogger("stages.prepare")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--extra-train", default=None, help="a folder with more pairs.jsonl for the train split only (distill)")
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--last-train", default=None,
                    help="metrics of the last train run (read only, for the time estimate; not an input)")
    args = ap.parse_args()
    p = load_params(args.params)
    max_len = p.train.max_seq_len
    log.info("prepare params: %s, train.max_seq_len=%d", p.prepare.model_dump(), max_len)

    pairs = read_jsonl(Path(args.pairs) / "pairs.jsonl")
    banner(f"split {len(pairs)} pairs by DAG")
    splits = split_by_dag(pairs, p.prepare, p.seed)
    from transformers import AutoTokenizer

    if not Path(args.base).is_dir():
        raise UserError(f"{args.base}: base model folder not found (run `dvc repro base` first)")
    tok = AutoTokenizer.from_pretrained(args.base)
    repairs = repair_rows(splits["train"], p.prepare.repair_share, p.prepare.system_prompt, p.seed)
    too_long = 0
    if repairs:
        # A repair conversation carries the request, a whole broken DAG and the findings before its answer: one
        # that does not fit train.max_seq_len would be trained on a cut answer (or fail the check below), so it
        # is left out and counted; the request/DAG pairs are never dropped.
        kept = fitting(repairs, token_lengths(tok, repairs)[0], max_len)
        too_long = len(repairs) - len(kept)
        if too_long:
            log.info("left out %d of %d repair conversations longer than train.max_seq_len=%d", too_long,
                     len(repairs), max_len)
        repairs = kept
    if repairs:
        # only train: val/test stay what evaluation scores, one request -> one DAG
        splits["train"] += repairs
        random.Random(f"{p.seed}:train+repair").shuffle(splits["train"])
        log.info("added %d repair conversations (prepare.repair_share=%.2f) to the train split", len(repairs),
                 p.prepare.repair_share)
    if args.extra_train and (Path(args.extra_train) / "pairs.jsonl").is_file():
        extra = read_jsonl(Path(args.extra_train) / "pairs.jsonl")
        # Distilled pairs have no spec to judge against: they only ever train.
        splits["train"] += train_rows(extra, p.prepare.system_prompt)
        log.info("added %d pairs from %s to the train split", len(extra), args.extra_train)

    banner("token lengths")
    metrics: dict = {"dags": {s: len({r["uid"] for r in splits[s]}) for s in SPLITS},
                     "repair_conversations": len(repairs), "repair_too_long": too_long}
    lengths = {}
    for split in SPLITS:
        if not splits[split]:
            continue
        full, prompt = token_lengths(tok, splits[split])
        lengths[split] = full
        metrics[split] = length_stats(full, prompt, max_len)
        if prompt.max() >= max_len:
            raise UserError(
                f"train.max_seq_len={max_len} is not longer than the longest prompt in the {split} split"
                f" ({int(prompt.max())} tokens): raise train.max_seq_len above {int(prompt.max())}"
            )
    log.info("train: %s", metrics["train"])

    banner(f"train cost at train.max_seq_len={max_len}")
    t = p.train
    cost = train_cost(lengths["train"], max_len, rows_per_step=t.batch_size * t.grad_accum, packing=t.packing)
    last = Path(args.last_train) if args.last_train else None
    estimate = compare_to_last_run(cost, read_json(last) if last and last.is_file() else None, t.max_steps)
    metrics["train_cost"] = cost | estimate
    log.info("%d tokens per step in %d packed rows of %d tokens (mean fill %.0f)", cost["tokens_per_step"],
             t.batch_size * t.grad_accum, max_len, cost["tokens_per_row"])
    if estimate:
        ref = estimate["reference"]
        total = estimate.get("estimated_train_seconds")
        msg = (f"train stage estimate: {estimate['relative_step_time']:.1f}x the time per step of the last train run"
               f" (max_seq_len {ref['max_seq_len']}: {ref['seconds'] / ref['steps']:.2f} s per step), about"
               f" {estimate['estimated_step_seconds']:.1f} s per step"
               + (f", {total / 60:.0f} min for train.max_steps={t.max_steps}" if total else ""))
        (log.warning if estimate["relative_step_time"] >= SLOWER_WARNING else log.info)(msg)
    else:
        log.info("no earlier train run with a recorded cost to compare with (%s)", last or "no --last-train")
    banner("write")
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        for split in SPLITS:
            write_jsonl(tmp / f"{split}.jsonl", splits[split])
        # the cost per step depends only on the data and params: train copies it beside its measured seconds
        write_meta(tmp, params={"seed": p.seed, "prepare": p.prepare.model_dump(), "max_seq_len": max_len},
                   inputs={"pairs": args.pairs}, train_cost=cost)
    write_json(args.metrics, metrics)
    log.info("wrote %s to %s", {s: len(splits[s]) for s in SPLITS}, args.out)


if __name__ == "__main__":
    main()
