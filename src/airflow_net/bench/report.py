"""From per-request records to the benchmark's numbers, ratios, CSVs, charts and a Markdown summary."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from airflow_net.bench.methods import Run

log = logging.getLogger(__name__)

PCTS = (50, 90, 99)
THROUGHPUT_COLS = ("method", "workers", "requests", "generated_tps", "prompt_tps", "decode_tps_per_stream",
                   "dags_per_s", "roofline_fraction", "peak_rss_mb", "other_cpu_share")
LATENCY_COLS = ("method", "workers", *(f"ttft_p{p}" for p in PCTS), *(f"latency_p{p}" for p in PCTS))


def summarize(run: Run, *, mean_dag_tokens: float, roofline_tps: float | None) -> dict[str, Any]:
    """Throughput, latency percentiles and memory of one method at one number of workers."""
    out: dict[str, Any] = {"method": run.method, "workers": run.workers}
    if run.skipped:
        return {**out, "skipped": run.skipped}
    recs = run.records
    if not recs:
        return {**out, "skipped": "no requests completed"}
    t0 = min(r["t_start"] for r in recs)
    wall = max(r["t_end"] for r in recs) - t0
    gen = sum(r["completion_tokens"] for r in recs)
    prompt = sum(r["prompt_tokens"] for r in recs)
    ttft = np.array([(r["t_first"] or r["t_end"]) - r["t_start"] for r in recs])
    lat = np.array([r["t_end"] - r["t_start"] for r in recs])
    decode = [(r["completion_tokens"] - 1) / (r["t_end"] - r["t_first"]) for r in recs
              if r["t_first"] and r["completion_tokens"] > 1 and r["t_end"] > r["t_first"]]
    gen_tps = gen / wall
    out.update({
        "requests": len(recs),
        "prompt_tokens": prompt,
        "generated_tokens": gen,
        "wall_s": round(wall, 3),
        "generated_tps": round(gen_tps, 2),
        # the rate a client sees its prompt read at: prompt tokens over time to first token (cached prefixes help)
        "prompt_tps": round(prompt / float(ttft.sum()), 1) if ttft.sum() > 0 else None,
        "decode_tps_per_stream": round(float(np.median(decode)), 2) if decode else None,
        "dags_per_s": round(gen_tps / mean_dag_tokens, 4) if mean_dag_tokens else None,
        **{f"ttft_p{p}": round(float(np.percentile(ttft, p)), 4) for p in PCTS},
        **{f"latency_p{p}": round(float(np.percentile(lat, p)), 4) for p in PCTS},
        "peak_rss_mb": run.peak_rss_mb,
    })
    if roofline_tps:
        out["roofline_fraction"] = round(gen_tps / roofline_tps, 3)
        if decode:
            out["decode_roofline_fraction"] = round(float(np.median(decode)) / roofline_tps, 3)
    if run.other_cpu_share is not None:
        out["other_cpu_share"] = run.other_cpu_share
    if run.notes:
        out["notes"] = run.notes
    return out


def median_run(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of one method at one number of workers to report, out of its repeats: the median by generated
    tokens/s (the lower middle one for an even number), with every repeat's tokens/s and their spread. A method
    that failed in some repeats is reported from the others, with a note; one that never ran keeps its reason."""
    done = [r for r in rows if not r.get("skipped")]
    if len(rows) == 1 or not done:
        return rows[0]
    tps = sorted(r["generated_tps"] for r in done)
    mid = tps[(len(tps) - 1) // 2]
    out = dict(next(r for r in done if r["generated_tps"] == mid))
    out["repeats_tps"] = [r["generated_tps"] for r in done]  # in the order they ran
    if all(r.get("decode_roofline_fraction") for r in done):
        out["repeats_decode_roofline_fraction"] = [r["decode_roofline_fraction"] for r in done]
    out["spread"] = round((tps[-1] - tps[0]) / mid, 3) if mid else None
    failed = [r["skipped"] for r in rows if r.get("skipped")]
    if failed:
        out["notes"] = [*out.get("notes", []), f"{len(failed)} of {len(rows)} repeats failed: {failed[0][:200]}"]
    return out


def _row(rows: list[dict[str, Any]], method: str, workers: int) -> dict[str, Any] | None:
    for r in rows:
        if r["method"] == method and r["workers"] == workers and not r.get("skipped"):
            return r
    return None


def _get(rows: list[dict[str, Any]], method: str, workers: int, key: str) -> float | None:
    r = _row(rows, method, workers)
    return None if r is None else r.get(key)


def _judge(r: dict[str, Any], value: float, target: float | None, rounds: list[float] | None) -> dict[str, Any]:
    """``r`` with its ratio round by round, its target, whether ``value`` (the unrounded ratio) meets it, and,
    when some rounds meet the target and some do not, the within-noise mark."""
    if rounds:
        r["rounds"] = rounds
    if target is not None:
        r.update(target=target, met=value >= target)
        if rounds and min(rounds) < target <= max(rounds):
            r["within_noise"] = True
    return r


def ratios(rows: list[dict[str, Any]], parallel: int = 4) -> dict[str, dict[str, Any]]:
    """The headline comparisons, each with its inputs, measured in this run (missing inputs: left out).

    A ratio is of the two median runs. With repeats, it is also given round by round (``rounds``): each round
    ran both methods within minutes of each other, so a slow spell of a shared machine moves both sides of a
    round's ratio, and the rounds' range shows how far the machine's noise moves the ratio itself."""
    out: dict[str, dict[str, Any]] = {}
    g = "generated_tps"

    def add(name: str, num: tuple[str, int] | None, den: tuple[str, int] | None, what: str,
            target: float | None = None) -> None:
        a = _row(rows, *num) if num else None
        b = _row(rows, *den) if den else None
        if not (a and b and a.get(g) and b.get(g)):
            return
        r: dict[str, Any] = {"ratio": round(a[g] / b[g], 3), "numerator": a[g], "denominator": b[g], "what": what}
        ra, rb = a.get("repeats_tps"), b.get("repeats_tps")
        paired = ra and rb and len(ra) == len(rb) and all(ra + rb)  # rounds pair up only if none failed
        out[name] = _judge(r, a[g] / b[g], target, [round(x / y, 3) for x, y in zip(ra, rb, strict=True)]
                           if paired else None)

    add(f"python_engine_x{parallel}_vs_llama_server_x{parallel}", ("python-engine", parallel),
        ("llama-server", parallel), f"generated tokens/s, {parallel} parallel requests", 1.0)
    add(f"python_engine_x{parallel}_vs_x1", ("python-engine", parallel), ("python-engine", 1),
        f"generated tokens/s, {parallel} parallel vs one stream", 1.5)
    tf = max((("transformers-fp32", 1), ("transformers-bf16", 1)), key=lambda k: _get(rows, *k, g) or 0)
    add("llama_cpp_vs_transformers", ("llama-cpp", 1), tf,  # the faster; add() leaves it out if neither ran
        "generated tokens/s, one sequence, vs the faster of transformers fp32/bf16", 5.0)
    add(f"python_engine_x{parallel}_vs_stock_server_x{parallel}", ("python-engine", parallel),
        ("llama-cpp-server", parallel), f"generated tokens/s, {parallel} clients")
    add(f"python_engine_x{parallel}_vs_processes_x{parallel}", ("python-engine", parallel),
        ("processes", parallel), f"generated tokens/s, {parallel} parallel")
    one = _row(rows, "llama-cpp", 1)
    if one and one.get("decode_roofline_fraction"):
        frac = one["decode_roofline_fraction"]
        reps = one.get("repeats_decode_roofline_fraction")  # every round's llama-cpp run
        out["single_stream_decode_vs_roofline"] = _judge(
            {"ratio": frac, "what": "llama-cpp one sequence: decode tokens/s over bandwidth / weight bytes"},
            frac, 0.9, reps if reps and len(reps) > 1 else None)
    return out


def write_csvs(rows: list[dict[str, Any]], plots_dir: Path) -> list[Path]:
    plots_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, cols in (("bench_throughput.csv", THROUGHPUT_COLS), ("bench_latency.csv", LATENCY_COLS)):
        path = plots_dir / name
        with path.open("w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            wr.writeheader()
            for r in rows:
                if not r.get("skipped"):
                    wr.writerow({c: r.get(c) for c in cols})
        paths.append(path)
    return paths


def write_charts(rows: list[dict[str, Any]], out_dir: Path, *, roofline_tps: float | None, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if not r.get("skipped")]
    methods = list(dict.fromkeys(r["method"] for r in done))
    workers = sorted({r["workers"] for r in done})

    fig, ax = plt.subplots(figsize=(8, 5))
    for m in methods:
        pts = sorted((r["workers"], r["generated_tps"]) for r in done if r["method"] == m)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    if roofline_tps:
        ax.axhline(roofline_tps, color="grey", linestyle="--", linewidth=1,
                   label=f"one-stream roofline ({roofline_tps:.0f} tok/s)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(workers, [str(w) for w in workers])
    ax.set_xlabel("parallel workers (requests in flight)")
    ax.set_ylabel("generated tokens/s (all requests)")
    ax.set_title(f"Throughput vs workers: {title}")
    ax.grid(alpha=0.3)
    if done or roofline_tps:
        ax.legend(fontsize=8)
    fig.tight_layout()
    tp = out_dir / "throughput.png"
    fig.savefig(tp, dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    for ax, key, label in ((axes[0], "ttft", "time to first token (s)"), (axes[1], "latency", "end-to-end latency (s)")):
        for i, m in enumerate(methods):
            pts = sorted((r["workers"], r[f"{key}_p50"], r[f"{key}_p99"]) for r in done if r["method"] == m)
            color = f"C{i}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=f"{m} p50")
            ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="x", linestyle="--", color=color,
                    label=f"{m} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(workers, [str(w) for w in workers])
        ax.set_xlabel("parallel workers")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if done:
        axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Latency percentiles (p50 solid, p99 dashed): {title}")
    fig.tight_layout()
    lp = out_dir / "latency.png"
    fig.savefig(lp, dpi=120)
    plt.close(fig)
    return [tp, lp]


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _range(r: dict[str, Any]) -> str:
    """' (min-max)' of the repeats' generated tokens/s, when the run was repeated."""
    reps = r.get("repeats_tps")
    return f" ({min(reps):.1f}-{max(reps):.1f})" if reps and len(reps) > 1 else ""


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def contaminated(bench: dict[str, Any], limit: float = 0.05) -> list[str]:
    """The runs during which other processes used more than ``limit`` of the CPU (their numbers are suspect)."""
    return [f"{r['method']} x{r['workers']}" for r in bench["results"]
            if not r.get("skipped") and (r.get("other_cpu_share") or 0) > limit]


def markdown(bench: dict[str, Any]) -> str:
    m, w, hw, roof = bench["model"], bench["workload"], bench["machine"], bench["roofline"]
    lines = [f"# Inference benchmark: {m['name']}", ""]
    if m.get("random_weights"):
        lines += ["> **Random weights.** This model has the real architecture and sizes of "
                  f"`{m['name']}` but random weights: its outputs are meaningless; its speed is the real model's.", ""]
    lines += [
        f"- model: `{m['gguf']}` ({m['size_mb']:.0f} MB, {m['n_params'] / 1e6:.0f} M parameters); "
        f"transformers baseline from `{m.get('hf_dir') or '–'}`",
        f"- workload: the same {w['requests']} requests in every run, each a distinct prompt from the test split "
        f"({min(w['prompt_tokens'])}-{max(w['prompt_tokens'])} tokens, mean "
        f"{sum(w['prompt_tokens']) / len(w['prompt_tokens']):.0f}), exactly {w['max_tokens']} generated tokens each "
        f"(end-of-generation ignored), greedy; mean DAG length {w['mean_dag_tokens']} tokens"
        + (f"; every run {w['repeats']} times, interleaved, the median reported" if w.get("repeats", 1) > 1 else ""),
        f"- machine: {hw['cpu']}, {hw['cores']} cores, {hw['memory_gib']} GiB; {bench['threads']} threads per method; "
        f"load average {hw['load_average']} before, {bench.get('load_average_after')} after",
        f"- memory bandwidth {roof['bandwidth_gbs']:.1f} GB/s (measured"
        + (f"; the median of {len(roof['bandwidth_gbs_measured'])}, {roof['bandwidth_gbs_range'][0]:.1f}-"
           f"{roof['bandwidth_gbs_range'][1]:.1f}" if len(roof.get("bandwidth_gbs_measured", [])) > 1 else "")
        + f"); a decode step reads {roof['bytes_per_token'] / 1e6:.0f} MB; one-stream roofline "
        f"{roof['tokens_per_s']:.1f} tokens/s",
        "",
        "## Headline ratios (measured in this run)",
        "",
        "| comparison | ratio | target | met |",
        "|---|---|---|---|",
    ]
    for name, r in bench["ratios"].items():
        rounds = f" (by round: {', '.join(f'{x:.2f}' for x in r['rounds'])})" if r.get("rounds") else ""
        met = "yes" if r.get("met") else ("no" if "met" in r else "–")
        if r.get("within_noise"):
            met += ", within the rounds' spread"
        lines.append(f"| {r['what']} (`{name}`) | {r['ratio']:.2f}x{rounds} | {_fmt(r.get('target'), 2)} | {met} |")
    lines += ["", "## Every method", "",
              "| method | workers | gen tok/s | prompt tok/s | decode tok/s/stream | DAGs/s | x roofline | "
              "TTFT p50/p90/p99 (s) | latency p50/p90/p99 (s) | peak RSS (MB) | other load |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in bench["results"]:
        if r.get("skipped"):
            why = r["skipped"].splitlines()[0].replace("|", "/")[:160]  # the whole message is in bench.json
            lines.append(f"| {r['method']} | {r['workers']} | skipped: {why} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['workers']} | {_fmt(r['generated_tps'])}{_range(r)} | {_fmt(r['prompt_tps'], 0)} | "
            f"{_fmt(r['decode_tps_per_stream'])} | {_fmt(r['dags_per_s'], 3)} | {_fmt(r.get('roofline_fraction'), 2)} | "
            f"{r['ttft_p50']:.2f} / {r['ttft_p90']:.2f} / {r['ttft_p99']:.2f} | "
            f"{r['latency_p50']:.2f} / {r['latency_p90']:.2f} / {r['latency_p99']:.2f} | {_fmt(r['peak_rss_mb'], 0)} | "
            f"{_pct(r.get('other_cpu_share'))} |")
    busy = contaminated(bench)
    if busy:
        lines += ["", f"> **Other processes used more than 5% of the CPU during:** {', '.join(busy)}. "
                      "Those numbers are low and noisy; rerun on a quiet machine."]
    lines += ["", "![throughput](throughput.png)", "", "![latency](latency.png)", "",
              "Notes: `x roofline` is generated tokens/s over the one-stream decode limit (bandwidth / weight bytes); "
              "batched decoding reads the weights once for all sequences, so it can pass 1. "
              "`prompt tok/s` is prompt tokens over time to first token, as a client sees it (a prompt prefix already "
              "in a slot's cache is not read again). `processes` splits the threads between its processes; "
              "`llama-cpp-server` serves one request at a time. Peak RSS: the processes holding the model. "
              "`other load`: the share of all cores other processes used during that run. With repeats, `gen tok/s` is "
              "the median run's, with the range of all repeats in brackets, and the other columns are that run's."]
    notes = [f"- {r['method']} x{r['workers']}: {n}" for r in bench["results"] for n in r.get("notes", [])]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"
