"""`airflow-net rewrite-bench`: latency of the reformulator's CPU runtimes, side by side in one run.

Examples:
  airflow-net rewrite-bench                                   # the trained model, every runtime in params.yaml
  airflow-net rewrite-bench --model shape:flan-t5-base --threads 2 --runtimes torch-fp32,torch-int8,gguf-q4_0

A shape model (shape:flan-t5-small|base|large) is Flan-T5's real architecture with random weights, built and
exported once into .cache/rewrite_shapes/. Prints the table (P50 ... P99, P99/P50, speed-up over torch-fp32)
and writes summary.md, latency_cdf.png and results.json to --out.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from airflow_net.utils import UserError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rewrite-bench", help="latency of the rewrite model's CPU runtimes, side by side",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/rewrite/finetuned",
                   help="a T5 folder or shape:flan-t5-small|base|large (random weights, real shape)")
    p.add_argument("--runtimes", default=None,
                   help="comma-separated runtime names (default: rewrite.runtimes x rewrite.quant in --params)")
    p.add_argument("--exported", default=None, help="folder of exported runtimes (default: models/rewrite/runtimes "
                   "for the trained model, the shape's cache folder for a shape)")
    p.add_argument("--tokenizer", default="models/rewrite/finetuned", help="a shape's SentencePiece tokenizer")
    p.add_argument("--data", default="data/rewrite/test.jsonl", help="queries (JSONL with a 'query' field)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default: rewrite.bench.threads)")
    p.add_argument("--queries", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--no-cold", action="store_true", help="skip cold start / peak RSS subprocesses")
    p.add_argument("--out", default=None, help="report folder (default: reports/rewrite_bench_cli/<model>)")
    return p


def run(args: argparse.Namespace) -> int:
    from airflow_net.params import REWRITE_QUANTS, load_params
    from airflow_net.rewrite.bench import cdf_chart, markdown, run_bench
    from airflow_net.rewrite.export import export_all, is_current, loadable
    from airflow_net.rewrite.shapes import build_shape, is_shape
    from airflow_net.utils import read_jsonl, write_json, write_text

    p = load_params(args.params).rewrite
    bp = p.bench
    known = [f"{f}-{q}" for f, qs in REWRITE_QUANTS.items() for q in qs]
    names = [n.strip() for n in args.runtimes.split(",")] if args.runtimes else p.runtime_names
    bad = [n for n in names if n not in known]
    if bad:
        raise UserError(f"unknown runtime(s) {bad}: expected names from {known}")
    if "torch-fp32" not in names:
        names = ["torch-fp32", *names]  # the reference every speed-up is measured against
    threads = [int(t) for t in args.threads.split(",")] if args.threads else bp.threads
    if is_shape(args.model):
        hf = build_shape(args.model, args.tokenizer)
        exported = Path(args.exported) if args.exported else hf.parent / "runtimes"
        missing = [n for n in names if not is_current(n, exported)]  # never made, or by an older layout
        if missing:
            exported.mkdir(parents=True, exist_ok=True)
            for n in missing:
                shutil.rmtree(exported / n, ignore_errors=True)
            export_all(missing, hf, exported)
    else:
        hf = Path(args.model)
        if not (hf / "config.json").is_file():
            raise UserError(f"{hf}: expected a T5 folder with config.json or shape:<name>")
        exported = Path(args.exported or "models/rewrite/runtimes")
    folders, skipped = loadable(names, hf, exported)
    queries = [r["query"] for r in read_jsonl(args.data)][: args.queries or bp.queries]
    result = run_bench(folders, queries, threads=threads, max_new_tokens=args.max_new_tokens or bp.max_new_tokens,
                       rounds=args.rounds or bp.rounds, warmup=bp.warmup, cold=not args.no_cold)
    for t in result["by_threads"].values():
        t["runtimes"].update({n: {"skipped": why} for n, why in skipped.items()})
    result["model"] = args.model
    title = f"Reformulator latency: {args.model}, {result['max_new_tokens']} tokens per query"
    out = Path(args.out or f"reports/rewrite_bench_cli/{args.model.replace(':', '_').replace('/', '_')}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    md = markdown(result, title)
    write_text(out / "summary.md", md)
    cdf_chart(result, out / "latency_cdf.png", title)
    print(md)
    print(f"wrote {out}/summary.md, latency_cdf.png, results.json")
    return 0
