"""`airflow-net bench`: every inference method on one workload, side by side (see docs/serving.md).

Reads the `bench:` section of the params file; flags override it for a one-off run, e.g.
`airflow-net bench --model shape:qwen2.5-coder-0.5b --workers 1,2,4,8 --max-tokens 128`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from airflow_net.utils import setup_logging


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="benchmark inference methods (tokens/s, latency, memory vs workers)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--model", help="base | finetuned | shape:NAME | FILE.gguf (default: bench.model)")
    p.add_argument("--quant", help="quantization of a shape:NAME model (default: bench.quant)")
    p.add_argument("--methods", help="comma-separated, e.g. llama-cpp,python-engine,llama-server")
    p.add_argument("--workers", help="comma-separated, e.g. 1,2,4,8")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--requests", type=int, help="sent by every run, each a distinct test prompt (default: bench.requests)")
    p.add_argument("--repeats", type=int, help="runs of each method x workers, interleaved; the median is reported")
    p.add_argument("--threads", type=int)
    p.add_argument("--data", default="data/sft", help="the SFT splits; prompts come from test.jsonl")
    p.add_argument("--models", default="models/gguf")
    p.add_argument("--base", default="models/base")
    p.add_argument("--llama-server", default=None, help="path of the llama-server binary")
    p.add_argument("--metrics", default="metrics/bench.json")
    p.add_argument("--plots", default="plots")
    p.add_argument("--out", default="reports/bench")
    return p


def run(args: argparse.Namespace) -> int:
    from airflow_net.bench.run import exit_on_sigterm, run_bench
    from airflow_net.params import BenchParams, load_params

    setup_logging(os.environ.get("AIRFLOW_NET_LOG", "INFO"))
    exit_on_sigterm()
    p = load_params(args.params)
    over = {k: v for k, v in {
        "model": args.model, "quant": args.quant, "max_tokens": args.max_tokens, "requests": args.requests,
        "repeats": args.repeats, "n_threads": args.threads,
        "methods": args.methods.split(",") if args.methods else None,
        "workers": [int(w) for w in args.workers.split(",")] if args.workers else None,
    }.items() if v is not None}
    params = BenchParams.model_validate({**p.bench.model_dump(), **over})
    run_bench(params, data_dir=Path(args.data), metrics_path=Path(args.metrics), plots_dir=Path(args.plots),
              out_dir=Path(args.out), models_dir=Path(args.models), base_dir=Path(args.base),
              llama_server=Path(args.llama_server) if args.llama_server else None, seed=p.seed)
    return 0
