"""rewrite_bench: CPU latency of every exported reformulator runtime, one query at a time, rounds interleaved.

Usage: python stages/rewrite_bench.py --data data/rewrite --model models/rewrite/finetuned --runtimes models/rewrite/runtimes --out reports/rewrite_bench --metrics metrics/rewrite_bench.json

Per thread count in rewrite.bench.threads and per runtime: mean, std, P50/P90/P95/P99, max, P99/P50, the P50
speed-up over torch-fp32, cold start and peak RSS (a fresh process each). Writes summary.md, latency_cdf.png and
results.json (with every sample) to --out; the figures without the samples to --metrics. Timings are run facts:
the outs are not cached and differ between runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from airflow_net import tracking
from airflow_net.params import load_params
from airflow_net.rewrite.bench import cdf_chart, markdown, run_bench, summary_rows
from airflow_net.rewrite.export import loadable
from airflow_net.utils import atomic_path, banner, read_jsonl, stage_entry, write_json, write_text

log = logging.getLogger("stages.rewrite_bench")


@stage_entry
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--runtimes", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    p = load_params(args.params).rewrite
    bp = p.bench
    folders, skipped = loadable(p.runtime_names, args.model, args.runtimes)
    queries = [r["query"] for r in read_jsonl(Path(args.data) / "test.jsonl")][: bp.queries]
    banner(f"{len(folders)} runtimes x threads {bp.threads}, {len(queries)} queries x {bp.rounds} rounds")
    result = run_bench(folders, queries, threads=bp.threads, max_new_tokens=bp.max_new_tokens, rounds=bp.rounds,
                       warmup=bp.warmup)
    for t in result["by_threads"].values():
        for name, why in skipped.items():
            t["runtimes"][name] = {"skipped": why}
    title = f"Reformulator latency ({args.model}, {bp.max_new_tokens} tokens per query)"
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        write_json(tmp / "results.json", result)
        write_text(tmp / "summary.md", markdown(result, title))
        cdf_chart(result, tmp / "latency_cdf.png", title)
    metrics = {k: v for k, v in result.items() if k != "by_threads"}
    metrics["rows"] = summary_rows(result)
    write_json(args.metrics, metrics)
    with tracking.run("rewrite_bench", {"rewrite.bench": bp.model_dump()}) as t:
        t.log_metrics({f"{r['runtime']}.t{r['threads']}": {k: r[k] for k in ("p50", "p99")}
                       for r in metrics["rows"] if "p50" in r})
    if result.get("fastest"):
        f = result["fastest"]
        log.info("fastest: %s at %d thread(s), P50 %.1f ms, P99 %.1f ms", f["runtime"], f["threads"], f["p50"], f["p99"])
    log.info("wrote %s/summary.md, latency_cdf.png and %s", args.out, args.metrics)


if __name__ == "__main__":
    main()
