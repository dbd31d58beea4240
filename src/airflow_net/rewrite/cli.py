"""`airflow-net rewrite "query"`: the reformulation and its milliseconds (an interactive loop without a query).

Example: `airflow-net rewrite --model models/rewrite/finetuned "run etl daily at 5"`. Without a query it reads
one per line: a prompt on a terminal (an empty line, `quit` or Ctrl-D ends), every line of a pipe. `--url` asks a
running `airflow-net rewrite-serve` instead of loading the model.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from airflow_net.rewrite.runtimes import RUNTIMES
from airflow_net.utils import UserError, setup_logging

log = logging.getLogger(__name__)

SERVE_DOC = """`airflow-net rewrite-serve`: the rewrite (T5) model over HTTP.

POST /v1/rewrite {"query": "..."} -> {"rewrite": "...", "ms": <server ms>, "tokens": n, "runtime": R};
GET /health; GET /metrics (Prometheus). One worker thread decodes; concurrent requests queue (up to
--max-queue, then 503) and are taken in batches of up to --max-batch.

Example: `airflow-net rewrite-serve --model models/rewrite/finetuned --port 8090`, then
`curl -s localhost:8090/v1/rewrite -d '{"query": "run etl daily at 5"}'`.
"""
QUIT = {"quit", "exit", ":q"}
DEFAULT_RUNTIME = "ct2-int8"
HF_FOLDER = "models/rewrite/finetuned"
EXPORTED = "models/rewrite/runtimes"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rewrite", help="reformulate a query with the rewrite (T5) model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("query", nargs="?", help="one query; without it, read queries line by line until EOF")
    p.add_argument("--model", default=None, help="the folder the runtime loads (default: models/rewrite/finetuned "
                   "for torch-*, rewrite_export's models/rewrite/runtimes/<runtime> for the others)")
    # ct2-int8: the fastest measured on the trained model (rewrite_bench), with beam search, same quality as
    # torch-fp32 with beams (rewrite.runtime)
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=sorted(RUNTIMES))
    p.add_argument("--threads", type=int, default=1)
    # as rewrite.evaluate.max_new_tokens: room for the longest canonical requests (most stop far sooner, at EOS)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--no-snap", action="store_true", help="the raw decoded text (default: mended, with the query's "
                   "ids copied: rewrite.snap, rewrite/snap.py)")
    p.add_argument("--beams", type=int, default=4, help="beam width; the first beam that parses wins (ct2 and torch "
                   "runtimes; 1: greedy, the others always greedy). Default as rewrite.beams")
    p.add_argument("--url", default=None,
                   help="a running rewrite-serve, e.g. http://127.0.0.1:8090 (then --model/--runtime are unused)")
    return p


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rewrite-serve", help="serve the rewrite (T5) model over HTTP (POST /v1/rewrite)",
                              description=SERVE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="the folder the runtime loads (default: models/rewrite/finetuned "
                   "for torch-*, rewrite_export's models/rewrite/runtimes/<runtime> for the others)")
    # the fastest runtime rewrite_bench measured on the trained model (README, "The reformulator")
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, help=f"one of {', '.join(sorted(RUNTIMES))}")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the one decoding worker")
    p.add_argument("--max-batch", type=int, default=8, help="queries the worker takes from the queue at once")
    p.add_argument("--max-queue", type=int, default=64, help="queries waiting before new ones get 503")
    # as rewrite.evaluate.max_new_tokens: room for the longest canonical requests (most stop far sooner, at EOS)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-query-chars", type=int, default=2000, help="longer queries get 400")
    p.add_argument("--no-snap", action="store_true", help="answer the raw decoded text (default: mended, with the "
                   "query's ids copied: rewrite/snap.py)")
    p.add_argument("--beams", type=int, default=4, help="beam width; the first beam that parses wins (ct2 and torch "
                   "runtimes; 1: greedy, the others always greedy). Default as rewrite.beams, what the pipeline "
                   "measured as served")
    p.add_argument("--batch-window-ms", type=float, default=2.0,
                   help="how long the worker waits for more queries to fill a batch")
    p.add_argument("--grace", type=float, default=10.0, help="seconds running requests get to finish on SIGTERM")
    return p


def _folder(runtime: str, model: str | None) -> str:
    """``model`` when given; else where the pipeline keeps what ``runtime`` loads."""
    if model:
        return model
    if runtime in RUNTIMES and RUNTIMES[runtime].loads_hf_folder:
        return HF_FOLDER
    folder = f"{EXPORTED}/{runtime}"
    if not Path(folder).is_dir():
        raise UserError(f"{folder}: no exported {runtime} reformulator (run `dvc repro rewrite_export`, or pass "
                        "--runtime torch-fp32 to use models/rewrite/finetuned as it is)")
    return folder


def _load(runtime: str, model: str | None, threads: int):
    from airflow_net.rewrite.runtimes import load

    model = _folder(runtime, model)

    try:
        return load(runtime, model, threads)
    except (ValueError, ImportError, OSError) as e:
        raise UserError(f"cannot load runtime {runtime} from {model}: {e}".replace("\n", " ")) from e


def _queries(query: str | None) -> Iterator[str]:
    if query:
        yield query
        return
    if sys.stdin.isatty():
        while True:
            try:
                line = input("rewrite> ").strip()
            except EOFError:
                sys.stdout.write("\n")
                return
            if not line or line.lower() in QUIT:
                return
            yield line
        return
    for line in sys.stdin:  # a pipe: every line, blank ones skipped
        if line.strip():
            yield line.strip()


def run(args: argparse.Namespace) -> int:
    answer: Callable[[str], tuple[str, float]]
    if args.url:
        from airflow_net.rewrite.client import ApiError, rewrite_api

        def answer(q: str) -> tuple[str, float]:
            try:
                out = rewrite_api(args.url, q)
            except ValueError as e:  # a bad URL
                raise UserError(str(e)) from e
            except ApiError as e:
                if e.status in (400, 503) and not args.query:  # this line was refused; the next may not be
                    sys.stderr.write(f"error: {e}\n")
                    return "", -1.0
                raise UserError(str(e)) from e
            return out["rewrite"], float(out["ms"])
    else:
        rt = _load(args.runtime, args.model, args.threads)

        from airflow_net.rewrite.snap import pick, snap

        def answer(q: str) -> tuple[str, float]:
            if args.beams > 1 and hasattr(rt, "nbest"):  # the first of the n best that parses (rewrite.beams)
                texts, ms, _ = rt.nbest(q, args.beams, args.max_new_tokens)
                return pick(texts, q, mend=not args.no_snap), ms
            gen = rt.generate([q], args.max_new_tokens)
            return (gen.texts[0] if args.no_snap else snap(gen.texts[0], q)), gen.ms[0]

    for q in _queries(args.query):
        text, ms = answer(q)
        if ms >= 0:
            # stdout is the product here (a chat tool), not a log line.
            sys.stdout.write(f"{text}\t{ms:.1f} ms\n")
            sys.stdout.flush()
    return 0


def run_serve(args: argparse.Namespace) -> int:
    setup_logging(os.environ.get("AIRFLOW_NET_LOG", "INFO"))
    for name in ("threads", "max_batch", "max_queue", "max_new_tokens", "max_query_chars", "beams"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if not 0 <= args.batch_window_ms <= 1000:
        raise UserError(f"--batch-window-ms must be in [0, 1000] (got {args.batch_window_ms})")
    rt = _load(args.runtime, args.model, args.threads)
    rt.generate(["warm up"], 4)  # the first decode pays one-off costs (allocations, kernel choice)
    log.info("loaded %s from %s (%d threads)", args.runtime, _folder(args.runtime, args.model), args.threads)
    from airflow_net.rewrite.server import serve

    serve(rt, runtime_name=args.runtime, host=args.host, port=args.port, max_new_tokens=args.max_new_tokens,
          max_batch=args.max_batch, max_queue=args.max_queue, max_query_chars=args.max_query_chars,
          window_s=args.batch_window_ms / 1000, grace_s=args.grace, snap=not args.no_snap, beams=args.beams)
    return 0
