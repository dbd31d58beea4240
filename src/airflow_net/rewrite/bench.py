"""Sequential single-query latency of the rewrite runtimes, rounds interleaved across runtimes.

Each round loads nothing: every runtime is loaded once (its cold start, load to first answer,
is measured then), warmed up, and each round runs all queries one at a time on every runtime,
the runtimes in rotating order so a burst of load from other processes spreads over them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from airflow_net.rewrite.runtimes import load

log = logging.getLogger(__name__)

PCTS = (50, 90, 95, 99)


def latency_stats(ms: list[float]) -> dict[str, float]:
    """Mean, std, P50/P90/P95/P99 and max of a list of milliseconds."""
    if not ms:
        raise ValueError("latency_stats: expected at least one measurement")
    a = np.asarray(ms, dtype=float)
    out = {"n": len(ms), "mean": round(float(a.mean()), 3), "std": round(float(a.std()), 3)}
    out.update({f"p{p}": round(float(np.percentile(a, p)), 3) for p in PCTS})
    out["max"] = round(float(a.max()), 3)
    return out


def bench_runtimes(folder: str | Mapping[str, str], runtimes: list[str], queries: list[str], *, threads: int,
                   max_new_tokens: int, rounds: int, warmup: int = 2) -> dict[str, Any]:
    """Latency per runtime over ``rounds`` interleaved rounds; a runtime that fails to load is skipped with why.

    ``folder`` is the folder every runtime loads, or a mapping from runtime name to its own folder (its export;
    the Hugging Face folder for the PyTorch runtimes).
    """
    if rounds < 1 or not queries or not runtimes:
        raise ValueError("bench_runtimes: expected rounds >= 1, queries and runtimes")
    loaded, results = {}, {}
    for name in runtimes:
        start = time.perf_counter()
        try:
            path = folder if isinstance(folder, str) else folder.get(name)
            if path is None:
                raise ValueError(f"no folder given for runtime {name!r}")
            rt = load(name, path, threads)
            rt.generate(queries[:1], max_new_tokens, ignore_eos=True)
        except (ValueError, ImportError, RuntimeError, OSError) as e:
            log.warning("runtime %s skipped: %s", name, e)
            results[name] = {"skipped": str(e).splitlines()[0] if str(e) else type(e).__name__}
            continue
        cold_ms = (time.perf_counter() - start) * 1000.0
        for _ in range(warmup):
            rt.generate(queries[:1], max_new_tokens, ignore_eos=True)
        loaded[name] = rt
        results[name] = {"cold_start_ms": round(cold_ms, 1), "round_p50": [], "ms": []}
    names = list(loaded)
    for r in range(rounds):
        # Rotate the order each round: no runtime always runs right after another's cache footprint.
        for name in names[r % len(names):] + names[:r % len(names)] if names else []:
            gen = loaded[name].generate(queries, max_new_tokens, ignore_eos=True)
            results[name]["ms"].extend(gen.ms)
            results[name]["round_p50"].append(round(float(np.percentile(gen.ms, 50)), 3))
    for name in names:
        res = results[name]
        res.update(latency_stats(res.pop("ms")))
    return {"threads": threads, "max_new_tokens": max_new_tokens, "rounds": rounds,
            "queries": len(queries), "runtimes": results}
