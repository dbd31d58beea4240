"""`airflow-net rewrite "query"`: the reformulation and its milliseconds (an interactive loop without a query).

Example: `airflow-net rewrite --model models/rewrite/finetuned "run etl daily at 5"`.
"""

from __future__ import annotations

import argparse
import sys

from airflow_net.rewrite.runtimes import RUNTIMES
from airflow_net.utils import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rewrite", help="reformulate a query with the rewrite (T5) model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("query", nargs="?", help="one query; without it, read queries line by line until EOF")
    p.add_argument("--model", default="models/rewrite/finetuned", help="a Hugging Face T5 folder")
    # torch-fp32 until the faster runtimes (ONNX Runtime, CTranslate2) are added and measured.
    p.add_argument("--runtime", default="torch-fp32", choices=sorted(RUNTIMES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=48)
    return p


def run(args: argparse.Namespace) -> int:
    from airflow_net.rewrite.runtimes import load

    try:
        rt = load(args.runtime, args.model, args.threads)
    except ValueError as e:
        raise UserError(str(e)) from e
    queries = [args.query] if args.query else (line.strip() for line in sys.stdin)
    for q in queries:
        if not q:
            continue
        gen = rt.generate([q], args.max_new_tokens)
        # stdout is the product here (a chat tool), not a log line.
        sys.stdout.write(f"{gen.texts[0]}\t{gen.ms[0]:.1f} ms\n")
        sys.stdout.flush()
    return 0
