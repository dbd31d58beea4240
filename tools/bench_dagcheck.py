#!/usr/bin/env python3
"""Benchmarks of dagcheck on the agreement corpus (the example DAGs of the apache-airflow wheels on PyPI
and their mutants, one defect each).

    python tools/bench_dagcheck.py speed        # static tiers, files/s on one core (+ DagBag ratio if the env exists)
    python tools/bench_dagcheck.py agreement    # static vs DagBag verdicts (needs `make airflow-env`): every file
                                                # judged as Airflow 2 and 3; per (written for, judged as) cell,
                                                # mutation kind and finding code; false alarms and misses by file
    python tools/bench_dagcheck.py all
    python tools/bench_dagcheck.py agreement --corpus people  # DAG files that people wrote, shipped in
                                                # third-party PyPI packages (people.py's pinned manifest)

The wheels are downloaded once into .cache/dagcheck/wheels (pip download, ~21 MB); people's packages into
.cache/dagcheck/people (~4 MB).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from airflow_net.dagcheck import agreement, check_source  # noqa: E402
from airflow_net.dagcheck.airflow_tier import AirflowEngine, env_available  # noqa: E402
from airflow_net.dagcheck.api import ApiIndex  # noqa: E402
from airflow_net.dagcheck.corpus import example_dags, fetch_wheels, mutate  # noqa: E402
from airflow_net.dagcheck.people import fetch_people_dags, people_examples  # noqa: E402

log = logging.getLogger("bench_dagcheck")
CACHE = ROOT / ".cache" / "dagcheck" / "wheels"
PEOPLE_CACHE = ROOT / ".cache" / "dagcheck" / "people"


def corpus(which: str = "apache") -> list:
    """Apache's example DAGs, people's DAG files (people.py), or both; each with its mutants."""
    examples = []
    if which in ("apache", "both"):
        examples += example_dags(fetch_wheels(CACHE))
    if which in ("people", "both"):
        examples += people_examples(fetch_people_dags(PEOPLE_CACHE))
    return examples + [m for e in examples for m in mutate(e)]


def speed(files: list, repeats: int = 5, dagbag_sample: int = 40) -> dict:
    """Static tiers (parse + static) over the corpus, best of `repeats` passes, one process, one core."""
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, honestly
    except (AttributeError, OSError):
        pass
    import ast

    ApiIndex.load()  # loaded once per process; not part of the per-file cost
    check_source("x = 1")

    def best_of(fn, gc_on: bool) -> float:
        times = []
        for _ in range(repeats):
            if not gc_on:
                gc.disable()
            try:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            finally:
                gc.enable()
        return min(times)

    def parse_only():
        for f in files:
            try:
                ast.parse(f.source)
            except SyntaxError:
                pass

    def static():
        for f in files:
            check_source(f.source, filename=f.name, airflow=f.airflow)

    t_parse = best_of(parse_only, gc_on=True)
    best = best_of(static, gc_on=True)
    best_nogc = best_of(static, gc_on=False)
    n = len(files)
    out = {"files": n, "mean_chars": round(statistics.mean(len(f.source) for f in files)),
           "static_files_per_s": round(n / best), "static_ms_per_file": round(1000 * best / n, 3),
           "static_files_per_s_gc_off": round(n / best_nogc), "parse_only_files_per_s": round(n / t_parse),
           "load_average": os.getloadavg()[0]}
    print(f"static tiers (parse + static): {n} files, {out['mean_chars']} chars on average, one core, best of "
          f"{repeats}: {out['static_files_per_s']} files/s ({out['static_ms_per_file']} ms/file); "
          f"{out['static_files_per_s_gc_off']} files/s with the garbage collector off; ast.parse alone: "
          f"{out['parse_only_files_per_s']} files/s (load average {out['load_average']:.1f})")
    for major in (3, 2):
        if not env_available(major):
            print(f"DagBag (Airflow {major}): no environment (make airflow-env); ratio not measured")
            continue
        sample = [f for f in files if f.airflow == major][:dagbag_sample]
        t0 = time.perf_counter()
        with AirflowEngine(major) as eng:
            t_start = time.perf_counter() - t0
            t1 = time.perf_counter()
            for f in sample:
                eng.check_source(f.source, f.name.split("/")[-1].split("#")[0])
            per_file = (time.perf_counter() - t1) / len(sample)
        static_per_file = best / n
        out[f"dagbag{major}_s_per_file"] = round(per_file, 4)
        out[f"dagbag{major}_startup_s"] = round(t_start, 2)
        out[f"ratio_vs_dagbag{major}"] = round(per_file / static_per_file, 1)
        print(f"DagBag tier (Airflow {major}): {per_file * 1000:.0f} ms/file over {len(sample)} files after a "
              f"{t_start:.1f} s start: the static tiers are {per_file / static_per_file:.0f}x faster")
    return out


def run_agreement(files: list) -> dict:
    missing = [m for m in (2, 3) if not env_available(m)]
    if missing:
        raise SystemExit(f"no Airflow environment for {missing}: run `make airflow-env` first")
    rows, timing = agreement.run(files, judge_as="both")
    print(agreement.table(rows))
    bad = [r for r in rows if not r.unchecked and (not r.agree or not r.detected)]
    if bad:
        print("\nfiles where the verdicts differ or the expected code is missing:")
        for r in bad:
            print(f"  {r.cell} {r.name}: static={'ok' if r.static_ok else 'fail'} {r.static_codes} "
                  f"airflow={'ok' if r.airflow_ok else 'fail'} {r.airflow_codes} {r.airflow_message[:200]}")
    m = agreement.metrics(rows)
    m["timing_s"] = {k: round(v, 2) for k, v in timing.items()}
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("speed", "agreement", "all"), nargs="?", default="all")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    ap.add_argument("--corpus", choices=("apache", "people", "both"), default="apache",
                    help="Apache's example DAGs (default), DAG files from third-party packages, or both")
    args = ap.parse_args()
    logging.basicConfig(level="WARNING")
    files = corpus(args.corpus)
    print(f"corpus: {sum(f.mutation is None for f in files)} example DAGs + "
          f"{sum(f.mutation is not None for f in files)} mutants")
    result = {}
    if args.what in ("agreement", "all"):
        result["agreement"] = run_agreement(files)
    if args.what in ("speed", "all"):
        result["speed"] = speed(files)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
