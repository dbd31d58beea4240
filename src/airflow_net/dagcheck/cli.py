"""`airflow-net validate PATH...`: check DAG files, folders or a JSONL of generated code.

Exit codes, as ruff's: 0 no error finding, 1 at least one file has an error finding, 2 the command itself
failed (bad arguments, missing Airflow environment). `--exit-zero` always exits 0 after reporting.
"""

from __future__ import annotations

import argparse
import logging
import sys

from airflow_net.dagcheck.findings import RULES
from airflow_net.dagcheck.validate import (
    ENGINES,
    format_json,
    format_text,
    iter_inputs,
    validate_sources,
    write_csv,
)
from airflow_net.utils import UserError, write_text

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help=".py files, folders, or .jsonl files of generated code")
    p.add_argument("--airflow", type=int, choices=(2, 3), default=3, help="target Airflow major version (default 3)")
    p.add_argument("--engine", choices=ENGINES, default="static",
                   help="static: parse + static (+ lint); airflow: also the real DagBag parse in a sandbox "
                   "(needs `make airflow-env`)")
    p.add_argument("--no-lint", dest="lint", action="store_false", help="skip ruff's AIR rules")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text", help="report format on stdout")
    p.add_argument("--output", "-o", help="write the report there instead of stdout")
    p.add_argument("--csv", help="also write the per-DAG CSV report to this file")
    p.add_argument("--conn-ids", help="comma-separated declared connection ids; others are reported (DC402)")
    p.add_argument("--timeout", type=float, default=30.0, help="airflow engine: seconds per file (default 30)")
    p.add_argument("--memory-mb", type=int, default=1024, help="airflow engine: memory per file (default 1024)")
    p.add_argument("--fix", action="store_true",
                   help="rewrite .py files with the fixes dagcheck can name exactly (the import a DC102/DC103 hint "
                   "gives, `a >> a`, a grouped task's full id in an XCom pull), where the file then has fewer "
                   "errors; then report")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even when errors are found")
    p.add_argument("--list-codes", action="store_true", help="print the table of codes and exit")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `validate` on the project CLI: `p = add_parser(sub); p.set_defaults(func=run)`."""
    p = subparsers.add_parser("validate", help="validate Airflow DAGs (dagcheck)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def codes_table() -> str:
    rows = [f"{r.code:7s} {r.name:28s} {r.severity:8s} {r.tier:8s} {r.summary}" for r in RULES.values()]
    rows.append("AIR*    (ruff's rule name)           warning  lint     Ruff's Airflow rules; AIR301 is an "
                "error when the target is Airflow 3")
    return "\n".join(rows) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.list_codes:
        sys.stdout.write(codes_table())
        return 0
    if not args.paths:
        raise UserError("give at least one PATH (a .py file, a folder or a .jsonl of generated code)")
    conn_ids = {c.strip() for c in args.conn_ids.split(",") if c.strip()} if args.conn_ids else None
    items = list(iter_inputs(args.paths))
    if not items:
        raise UserError(f"no DAG files found in {', '.join(args.paths)}")
    if args.fix:
        items = _fix_files(items, args.airflow, conn_ids)
    lint = args.lint
    if lint:
        try:
            from airflow_net.dagcheck.lint import ruff_exe

            ruff_exe()
        except UserError as exc:
            log.warning("%s; skipping the lint tier", exc)
            lint = False
    reports = validate_sources(items, airflow=args.airflow, conn_ids=conn_ids, lint=lint, engine=args.engine,
                               timeout_s=args.timeout, memory_mb=args.memory_mb)
    if args.format == "csv":
        if args.output:
            write_csv(reports, args.output)
        else:
            import csv

            from airflow_net.dagcheck.validate import CSV_FIELDS, csv_rows

            w = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS)
            w.writeheader()
            w.writerows(csv_rows(reports))
    else:
        text = format_json(reports) if args.format == "json" else format_text(reports)
        if args.output:
            write_text(args.output, text)
        else:
            sys.stdout.write(text)
    if args.csv:
        write_csv(reports, args.csv)
    failed = sum(not r.ok for r in reports)
    log.debug("%d of %d files have errors", failed, len(reports))
    return 0 if args.exit_zero or not failed else 1


def _fix_files(items: list[tuple[str, str]], airflow: int, conn_ids: set[str] | None) -> list[tuple[str, str]]:
    """Each .py file rewritten (atomically) with :func:`airflow_net.dagcheck.fix.fix_source`'s fixes, when it
    has any; stderr says what was fixed. JSONL entries are checked as they are (their file is not code)."""
    from pathlib import Path

    from airflow_net.dagcheck.core import check_source
    from airflow_net.dagcheck.fix import fix_source

    out, fixed, skipped = [], 0, 0
    for name, source in items:
        path = Path(name)
        if not (path.suffix == ".py" and path.is_file()):
            skipped += 1
            out.append((name, source))
            continue
        result = fix_source(source, airflow=airflow,
                            report=check_source(source, filename=name, airflow=airflow, conn_ids=conn_ids))
        if result.source != source:
            write_text(path, result.source)
            fixed += 1
            print(f"fixed {name}: {'; '.join(result.fixes)}", file=sys.stderr)
        out.append((name, result.source))
    if skipped:
        log.warning("--fix: %d entries are not .py files (JSONL rows): checked, not rewritten", skipped)
    print(f"--fix: {fixed} of {len(items)} files rewritten", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    from airflow_net.utils import setup_logging

    setup_logging("WARNING")
    p = argparse.ArgumentParser(prog="python -m airflow_net.dagcheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
