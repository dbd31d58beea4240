"""The `airflow-net` command: validate DAGs, write one from a request, check a params file.

Subcommands plug in here from their packages (dagcheck's `validate`, the DVC `remote`; serving and benchmarking).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from airflow_net.utils import UserError, setup_logging


def _cmd_generate(args: argparse.Namespace) -> int:
    from airflow_net.dagcheck import check_source
    from airflow_net.data.prepare import to_messages
    from airflow_net.params import load_params
    from airflow_net.serve.generation import load_gguf

    p = load_params(args.params)
    request = " ".join(args.request) if args.request else sys.stdin.read()
    if not request.strip():
        raise UserError("empty request: pass it as arguments or on standard input")
    from airflow_net.generate.strategies import dagcheck_judge, engine_backend, run_strategy

    g = p.generate
    strategy = args.strategy or g.strategy
    n = args.n or g.best_of_n
    endpoint = args.endpoint or g.endpoint
    reformulate = None
    if strategy in ("templated", "reformulated") and not args.rewrite:
        default = "models/rewrite/finetuned"
        if (Path(default) / "config.json").is_file():
            args.rewrite = default  # these strategies reformulate first: the pipeline's reformulator
            print(f"# {strategy}: reformulating with {default} (--rewrite DIR for another)", file=sys.stderr)
        elif strategy == "reformulated":
            raise UserError("--strategy reformulated needs the rewrite model: pass --rewrite DIR "
                            f"(or run `dvc repro rewrite_train` to make {default})")
    if args.rewrite:  # the reformulator first: a person's request -> the canonical request
        from airflow_net.rewrite.reformulator import Reformulator

        exported = Path("models/rewrite/runtimes")
        runtime = p.rewrite.runtime if (exported / p.rewrite.runtime).is_dir() else "torch-fp32"
        rewriter = Reformulator(args.rewrite, runtime=runtime, exported=exported,
                                max_new_tokens=p.rewrite.evaluate.max_new_tokens, snap=p.rewrite.snap,
                                beams=p.rewrite.beams)

        def reformulate(text: str) -> str:
            out = rewriter(text)
            print(f"# rewrite ({rewriter.last_ms:.0f} ms): {out}", file=sys.stderr)
            return out

        if strategy not in ("templated", "reformulated"):  # the DAG model gets the concise request (it is
            request = reformulate(request)  # trained on that style too); those two call the reformulator themselves
    if strategy == "templated" and not (endpoint or args.model):
        def backend(*_a, **_k):  # noqa: ANN202
            raise UserError("the request did not render as a canonical request: pass --model (a GGUF) or --endpoint"
                            f" for generate.templated_fallback ({g.templated_fallback})")
    elif endpoint:
        from airflow_net.generate.endpoint import endpoint_backend

        backend = endpoint_backend(endpoint, model=g.endpoint_model, max_tokens=args.max_tokens or g.max_tokens,
                                   top_p=g.top_p, api_key_env=g.api_key_env, concurrency=g.endpoint_concurrency,
                                   copy_ids=g.endpoint_copy_ids and not args.no_copy_ids)
    else:
        if not args.model:
            raise UserError("pass --model (a GGUF file) or --endpoint (an OpenAI-compatible base URL)")
        llm = load_gguf(args.model, n_ctx=g.n_ctx, n_threads=g.n_threads, seed=p.seed,
                        n_parallel=n if "best_of_n" in strategy else 1)
        backend = engine_backend(llm, max_tokens=args.max_tokens or g.max_tokens, top_p=g.top_p,
                                 copy_ids=g.copy_ids and not args.no_copy_ids)
    out = run_strategy(strategy, to_messages(p.prepare.system_prompt, request), backend,
                       dagcheck_judge(args.airflow, autofix=g.autofix),
                       n=n, rounds=g.repair_rounds if args.rounds is None else args.rounds,
                       temperature=g.sample_temperature, seed=p.seed, reformulate=reformulate,
                       fallback=g.templated_fallback, airflow=args.airflow)
    print(out.code, end="")
    report = check_source(out.code, airflow=args.airflow)
    print(f"# dagcheck: {'valid' if report.ok else 'INVALID'}"
          + "".join(f"\n#   {f.code} line {f.line}: {f.message}" for f in report.findings), file=sys.stderr)
    print(f"# strategy: {strategy}{' (fell back to ' + g.templated_fallback + ')' if out.fallback else ''}; "
          f"candidates: {out.candidates}; repair rounds: {out.rounds}; "
          f"tokens: {out.completion_tokens}; time: {out.seconds:.2f} s", file=sys.stderr)
    return 0 if report.ok else 1


def _cmd_params(args: argparse.Namespace) -> int:
    from airflow_net.params import load_params

    p = load_params(args.params)
    print(json.dumps(p.model_dump(), indent=2) if args.show else f"{args.params}: ok")
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    ap = argparse.ArgumentParser(prog="airflow-net", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    g = sub.add_parser("generate", help="write a DAG for a plain-language request with a GGUF model")
    g.add_argument("request", nargs="*", help="the request (default: standard input)")
    g.add_argument("--model", help="a GGUF file, e.g. models/gguf/finetuned-Q4_K_M.gguf")
    g.add_argument("--endpoint", help="an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 "
                   "(default: generate.endpoint; the key comes from the env variable named by generate.api_key_env)")
    g.add_argument("--params", default="params.yaml")
    g.add_argument("--max-tokens", type=int, default=0)
    g.add_argument("--strategy", default=None,
                   choices=("direct", "best_of_n", "repair", "best_of_n_repair", "templated", "reformulated"),
                   help="direct | best_of_n | repair | best_of_n_repair | templated | reformulated "
                   "(default: generate.strategy in the params)")
    g.add_argument("-n", type=int, default=0, help="best_of_n's candidates (default: generate.best_of_n)")
    g.add_argument("--rounds", type=int, default=None, help="repair rounds (default: generate.repair_rounds)")
    g.add_argument("--airflow", type=int, choices=(2, 3), default=3)
    g.add_argument("--rewrite", nargs="?", const="models/rewrite/finetuned", default=None, metavar="DIR",
                   help="reformulate the request first with the rewrite model (default DIR: models/rewrite/finetuned);"
                        " templated renders the reformulation, the others send it to the DAG model")
    g.add_argument("--no-copy-ids", action="store_true",
                   help="let the model choose its ids (default: generate.copy_ids, ids copied from the request)")
    handlers["generate"] = _cmd_generate

    pp = sub.add_parser("params", help="validate a params file (and show it resolved with --show)")
    pp.add_argument("params", nargs="?", default="params.yaml")
    pp.add_argument("--show", action="store_true")
    handlers["params"] = _cmd_params

    from airflow_net import remote  # DVC remote: setup, check, push, pull (light: dvc/boto3 load on use)

    remote.add_parser(sub)
    handlers["remote"] = remote.run

    from airflow_net.bench import cli as bench_cli
    from airflow_net.serve import cli as serve_cli

    serve_cli.add_parser(sub)
    handlers["serve"] = serve_cli.run
    bench_cli.add_parser(sub)
    handlers["bench"] = bench_cli.run

    from airflow_net.rewrite import cli as rewrite_cli  # issue 15: the T5 reformulation model

    rewrite_cli.add_parser(sub)
    handlers["rewrite"] = rewrite_cli.run
    rewrite_cli.add_serve_parser(sub)
    handlers["rewrite-serve"] = rewrite_cli.run_serve
    from airflow_net.rewrite import bench_cli as rewrite_bench_cli

    rewrite_bench_cli.add_parser(sub)
    handlers["rewrite-bench"] = rewrite_bench_cli.run

    try:  # the validator's CLI, when its package provides one
        from airflow_net.dagcheck import cli as dagcheck_cli

        dagcheck_cli.add_parser(sub)
        handlers["validate"] = dagcheck_cli.run
    except ImportError:
        pass
    return ap, handlers


def main(argv: list[str] | None = None) -> None:
    from airflow_net.params import ParamsError

    setup_logging("WARNING")
    ap, handlers = build_parser()
    args = ap.parse_args(argv)
    try:
        code = handlers[args.command](args)
    except (UserError, ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
