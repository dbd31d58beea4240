"""quant_sweep: one quantization type of the fine-tuned model, measured against its F16 GGUF.

Usage: python stages/quant_sweep.py --type Q4_K_M --reference models/gguf/finetuned-f16.gguf --data data/sft
       --out reports/quant_sweep/Q4_K_M --metrics metrics/quant_sweep/Q4_K_M.json

dvc.yaml runs it once per type in `quant_sweep.types` (a foreach stage). The type is quantized from the export
stage's F16 file with llama.cpp (F16: the file as it is), answers the same `quant_sweep.sample` seeded test
requests as every other type (file size, tokens/s, valid rate and structural F1 with 95% intervals) and reads their
gold answers teacher-forced beside F16 (KL divergence and top-1 agreement, llama.cpp's method). The per-request
rows go to --out; the numbers, with run facts (seconds, tokens/s), to --metrics. The quantized file is not kept:
`quant.type` stays the one the pipeline ships; the report names the smallest type within F16's intervals.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from tqdm import tqdm

from airflow_net.export.sweep import sweep_type
from airflow_net.generate.compare import pick_per_dag
from airflow_net.params import QUANT_TYPES, load_params
from airflow_net.utils import atomic_path, banner, read_jsonl, stage_entry, write_json, write_jsonl

log = logging.getLogger("stages.quant_sweep")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--type", required=True, type=str.upper, choices=QUANT_TYPES)
    ap.add_argument("--reference", required=True, help="the fine-tuned F16 GGUF the export stage wrote")
    ap.add_argument("--data", required=True, help="the sft folder (test.jsonl)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    p = load_params(args.params)
    q, g = p.quant_sweep, p.generate
    log.info("type %s; quant_sweep params: %s", args.type, q.model_dump())

    requests = pick_per_dag(read_jsonl(Path(args.data) / "test.jsonl"), q.sample, q.seed)
    banner(f"{args.type}: {len(requests)} requests, KL against {Path(args.reference).name}")
    with tempfile.TemporaryDirectory(prefix="airflow-net-quant-") as scratch, \
            tqdm(total=len(requests), desc=args.type, unit="request", disable=None) as bar:
        res = sweep_type(args.type, args.reference, requests, work_dir=Path(scratch), gen=g, seed=q.seed,
                         resamples=q.bootstrap_resamples, bootstrap_seed=q.seed, max_kl=q.max_kl,
                         progress=bar.update)
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        write_jsonl(tmp / "answers.jsonl", res.rows)
    write_json(args.metrics, res.metrics)
    log.info("wrote %s and %s", args.out, args.metrics)


if __name__ == "__main__":
    main()
