"""Latency of the rewrite runtimes: sequential single queries, rounds interleaved across runtimes.

Every runtime is loaded once in this process, warmed up, and each round runs all queries one at a time on
every runtime, the runtimes in rotating order, so a burst of load from other processes spreads over them
(this VM is noisy: per-round medians are kept to show the spread). Cold start (process start to first
answer) and peak resident memory are measured apart, one fresh subprocess per runtime
(``python -m airflow_net.rewrite.bench --cold``), since one process holding every runtime would mix them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from airflow_net.rewrite.runtimes import load
from airflow_net.rewrite.runtimes.base import RUNTIME_ERRORS, why

log = logging.getLogger(__name__)

PCTS = (50, 90, 95, 99)
# The design notes' figures for Flan-T5-base in PyTorch on their CPU (ms per query), shown beside ours.
NOTES_FLAN_T5_BASE_MS = {"mean": 176, "p50": 110, "p90": 221, "p95": 422, "p99": 1909}


def latency_stats(ms: list[float]) -> dict[str, float]:
    """Mean, std, P50/P90/P95/P99 and max of a list of milliseconds."""
    if not ms:
        raise ValueError("latency_stats: expected at least one measurement")
    a = np.asarray(ms, dtype=float)
    out = {"n": len(ms), "mean": round(float(a.mean()), 3), "std": round(float(a.std()), 3)}
    out.update({f"p{p}": round(float(np.percentile(a, p)), 3) for p in PCTS})
    out["max"] = round(float(a.max()), 3)
    return out


def bench_runtimes(folders: dict[str, str], queries: list[str], *, threads: int, max_new_tokens: int,
                   rounds: int, warmup: int = 2) -> dict[str, Any]:
    """Latency per runtime (name -> folder it loads) over ``rounds`` interleaved rounds; a runtime that
    fails to load is recorded with one line saying why. Each query generates exactly ``max_new_tokens``."""
    if rounds < 1 or not queries or not folders:
        raise ValueError("bench_runtimes: expected rounds >= 1, queries and runtimes")
    loaded, results, samples = {}, {}, {}
    for name, folder in folders.items():
        try:
            rt = load(name, folder, threads)
            for _ in range(max(1, warmup)):
                rt.generate(queries[:1], max_new_tokens, ignore_eos=True)
        except RUNTIME_ERRORS as e:
            log.warning("runtime %s skipped: %s", name, why(e))
            results[name] = {"skipped": why(e)}
            continue
        loaded[name] = rt
        results[name] = {"round_p50": []}
        samples[name] = []
    names = list(loaded)
    for r in range(rounds):
        # Rotate the order each round: no runtime always runs right after another's cache footprint.
        for name in names[r % len(names):] + names[:r % len(names)] if names else []:
            gen = loaded[name].generate(queries, max_new_tokens, ignore_eos=True)
            if any(n != max_new_tokens for n in gen.tokens):
                raise RuntimeError(f"{name}: generated {sorted(set(gen.tokens))} tokens, expected exactly "
                                   f"{max_new_tokens} with EOS ignored")
            samples[name].extend(gen.ms)
            results[name]["round_p50"].append(round(float(np.percentile(gen.ms, 50)), 3))
    for name in names:
        results[name].update(latency_stats(samples[name]))
        results[name]["ms"] = [round(x, 3) for x in samples[name]]
    return {"threads": threads, "max_new_tokens": max_new_tokens, "rounds": rounds,
            "queries": len(queries), "runtimes": results}


def cold_start(name: str, folder: str, *, threads: int, query: str, max_new_tokens: int,
               timeout_s: float = 600) -> dict[str, Any]:
    """Process start to first answer and peak RSS, in a fresh subprocess (``{"skipped": why}`` on failure)."""
    cmd = [sys.executable, "-m", "airflow_net.rewrite.bench", "--cold", name, folder, "--threads", str(threads),
           "--query", query, "--max-new-tokens", str(max_new_tokens)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"cold start took more than {timeout_s:.0f} s"}
    wall_ms = (time.perf_counter() - start) * 1000.0
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"cold start failed (exit {proc.returncode}): {tail}"}
    facts = json.loads(lines[-1])
    return {"cold_start_ms": round(wall_ms, 1), "load_ms": facts["load_ms"], "first_answer_ms": facts["first_ms"],
            "peak_rss_mb": facts["peak_rss_mb"]}


def _cold_main(argv: list[str]) -> int:
    """The subprocess side of ``cold_start``: load, answer once, print timings and VmHWM as one JSON line."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", nargs=2, metavar=("RUNTIME", "FOLDER"), required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    a = ap.parse_args(argv)
    from airflow_net.bench.hardware import peak_rss_mb

    t0 = time.perf_counter()
    rt = load(a.cold[0], a.cold[1], a.threads)
    t1 = time.perf_counter()
    rt.generate([a.query], a.max_new_tokens, ignore_eos=True)
    t2 = time.perf_counter()
    print(json.dumps({"load_ms": round((t1 - t0) * 1000, 1), "first_ms": round((t2 - t1) * 1000, 1),
                      "peak_rss_mb": peak_rss_mb(os.getpid())}))
    return 0


def run_bench(folders: dict[str, str], queries: list[str], *, threads: list[int], max_new_tokens: int,
              rounds: int, warmup: int, cold: bool = True) -> dict[str, Any]:
    """The whole benchmark: per thread count, interleaved latency of every runtime, plus cold starts."""
    out: dict[str, Any] = {"max_new_tokens": max_new_tokens, "queries": len(queries), "rounds": rounds,
                           "by_threads": {}}
    for i, t in enumerate(threads):
        log.info("latency at %d thread(s): %s", t, ", ".join(folders))
        res = bench_runtimes(folders, queries, threads=t, max_new_tokens=max_new_tokens, rounds=rounds,
                             warmup=warmup)
        # cold start and peak RSS once per runtime, at the first thread count: loading barely depends on threads,
        # and each costs a fresh process (seconds)
        if cold and i == 0:
            for name, folder in folders.items():
                if "skipped" not in res["runtimes"][name]:
                    res["runtimes"][name].update(cold_start(name, folder, threads=t, query=queries[0],
                                                            max_new_tokens=max_new_tokens))
        ref = res["runtimes"].get("torch-fp32", {})
        for r in res["runtimes"].values():
            if "p50" in r:
                r["p99_over_p50"] = round(r["p99"] / r["p50"], 3)
                if "p50" in ref:
                    r["speedup_p50_vs_torch_fp32"] = round(ref["p50"] / r["p50"], 3)
        out["by_threads"][str(t)] = res
    best = fastest(out)
    if best:
        out["fastest"] = best
        ref = fastest(out, "torch-fp32")
        if ref:
            # each at its own best thread count: a runtime that gains from a second thread is not held to one,
            # and PyTorch is not held to a count that slows it
            out["best_vs_torch_fp32"] = {"runtime": best["runtime"], "threads": best["threads"],
                                         "torch_fp32_threads": ref["threads"],
                                         "speedup_p50": round(ref["p50"] / best["p50"], 3)}
    return out


def fastest(result: dict[str, Any], runtime: str | None = None) -> dict[str, Any] | None:
    """The runtime (or ``runtime``) and thread count with the lowest P50 (ties: the lower P99)."""
    cands = [(r["p50"], r["p99"], name, int(t)) for t, res in result["by_threads"].items()
             for name, r in res["runtimes"].items() if "p50" in r and runtime in (None, name)]
    if not cands:
        return None
    p50, p99, name, t = min(cands)
    return {"runtime": name, "threads": t, "p50": p50, "p99": p99}


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (threads, runtime): the figures of the Markdown table and the metrics file."""
    rows = []
    for t, res in result["by_threads"].items():
        for name, r in res["runtimes"].items():
            row: dict[str, Any] = {"threads": int(t), "runtime": name}
            if "skipped" in r:
                row["skipped"] = r["skipped"]
            else:
                row.update({k: r[k] for k in ("mean", "std", "p50", "p90", "p95", "p99", "max", "p99_over_p50")})
                row["round_p50"] = r["round_p50"]
                for k in ("speedup_p50_vs_torch_fp32", "cold_start_ms", "peak_rss_mb", "skipped"):
                    if k in r:
                        row[k] = r[k]
            rows.append(row)
    return rows


def markdown(result: dict[str, Any], title: str) -> str:
    """The benchmark as a Markdown table, with the design notes' PyTorch figures beside ours."""
    lines = [f"# {title}", "",
             f"{result['queries']} queries one at a time, exactly {result['max_new_tokens']} generated tokens each, "
             f"{result['rounds']} rounds interleaved across runtimes; milliseconds per query. "
             "Per-round P50s show the spread on this noisy machine.", "",
             "| threads | runtime | P50 | P90 | P95 | P99 | max | mean | P99/P50 | P50 speed-up vs torch-fp32 "
             "| cold start | peak RSS MB | per-round P50 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary_rows(result):
        if "p50" not in r:
            lines.append(f"| {r['threads']} | {r['runtime']} | skipped: {r['skipped']} |||||||||||")
            continue
        speed = r.get("speedup_p50_vs_torch_fp32")
        cold, rss = r.get("cold_start_ms"), r.get("peak_rss_mb")
        lines.append(
            f"| {r['threads']} | {r['runtime']} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
            f"| {r['max']:.1f} | {r['mean']:.1f} | {r['p99_over_p50']:.2f} | "
            f"{f'{speed:.2f}x' if speed else '-'} | {f'{cold:.0f} ms' if cold else '-'} | "
            f"{f'{rss:.0f}' if rss else '-'} | {', '.join(f'{x:.1f}' for x in r['round_p50'])} |")
    n = NOTES_FLAN_T5_BASE_MS
    lines += ["", "The design notes' figures for Flan-T5-base in PyTorch on their laptop, for comparison: "
              f"mean {n['mean']} ms, median {n['p50']} ms, P90 {n['p90']} ms, P95 {n['p95']} ms, P99 {n['p99']} ms."]
    if result.get("fastest"):
        f = result["fastest"]
        lines += ["", f"Fastest: **{f['runtime']}** at {f['threads']} thread(s), P50 {f['p50']:.1f} ms, "
                      f"P99 {f['p99']:.1f} ms."]
    if result.get("best_vs_torch_fp32"):
        b = result["best_vs_torch_fp32"]
        lines += ["", f"Best against best: {b['runtime']} at {b['threads']} thread(s) is **{b['speedup_p50']:.2f}x** "
                      f"torch-fp32 at its best thread count ({b['torch_fp32_threads']}), P50 against P50."]
    return "\n".join(lines) + "\n"


def cdf_chart(result: dict[str, Any], path: str | Path, title: str) -> None:
    """Latency CDF per runtime, one panel per thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_t = result["by_threads"]
    fig, axes = plt.subplots(1, len(by_t), figsize=(6 * len(by_t), 4), squeeze=False)
    for ax, (t, res) in zip(axes[0], by_t.items(), strict=True):
        for name, r in res["runtimes"].items():
            if "ms" in r:
                xs = np.sort(r["ms"])
                ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("ms per query (log)")
        ax.set_ylabel("share of queries")
        ax.set_title(f"{t} thread(s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(_cold_main(sys.argv[1:]))
