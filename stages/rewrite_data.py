"""rewrite_data: (query, rewrite) pairs for the reformulator, split by DAG into train/val/test JSONL.

Usage: python stages/rewrite_data.py --corpus data/corpus --out data/rewrite --metrics metrics/rewrite_data.json
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from airflow_net.params import load_params
from airflow_net.rewrite.data import SPLITS, build_splits
from airflow_net.utils import (
    atomic_path,
    banner,
    read_jsonl,
    stage_entry,
    write_json,
    write_jsonl,
    write_meta,
)

log = logging.getLogger("stages.rewrite_data")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    p = load_params(args.params)
    dp = p.rewrite.data
    log.info("rewrite.data: %s", dp.model_dump())
    banner(f"pairs from {dp.source}")
    corpus = read_jsonl(Path(args.corpus) / "dags.jsonl") if dp.source == "corpus" else None
    splits = build_splits(dp, p.seed, corpus)
    banner("write")
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        for s in SPLITS:
            write_jsonl(tmp / f"{s}.jsonl", splits[s])
        write_meta(tmp, params={"seed": p.seed, "rewrite.data": dp.model_dump()}, inputs={"corpus": args.corpus})
    metrics = {s: {"pairs": len(splits[s]), "styles": dict(sorted(Counter(r.get("style", "-") for r in splits[s]).items()))}
               for s in SPLITS}
    write_json(args.metrics, metrics)
    log.info("wrote %s (%s)", args.out, {s: len(splits[s]) for s in SPLITS})


if __name__ == "__main__":
    main()
