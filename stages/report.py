"""report: a Markdown report with PNG charts from the metrics and plot files.

Usage: python stages/report.py --metrics metrics --plots plots --eval reports/eval --out reports/summary
"""

from __future__ import annotations

import argparse
from pathlib import Path

from airflow_net.report import write_report
from airflow_net.utils import atomic_path, stage_entry


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plots", required=True)
    ap.add_argument("--eval", help="the evaluate stage's folder: examples.json gives one example per error class")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with atomic_path(args.out) as tmp:
        write_report(Path(args.metrics), Path(args.plots), tmp, Path(args.eval) if args.eval else None)


if __name__ == "__main__":
    main()
