"""Uncertainty for small evaluation sets: bootstrap intervals and paired tests, base vs fine-tuned.

With ~50-200 test requests a rate moves by several points between runs; these say how much, so the report
calls a difference "significant" only where the paired test says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALPHA = 0.05  # 95% intervals, 5% two-sided tests


def bootstrap_ci(values: Sequence[float], resamples: int, seed: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, all resamples drawn at once (one (resamples, n) index matrix)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar test on paired pass/fail outcomes: only the discordant pairs carry information."""
    from scipy.stats import binomtest

    a_, b_ = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a_.shape != b_.shape:
        raise ValueError(f"paired outcomes must have the same length, got {a_.size} and {b_.size}")
    only_b = int((~a_ & b_).sum())  # fine-tuned passes where base fails
    only_a = int((a_ & ~b_).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_b, n, 0.5).pvalue)
    return {"b_only": only_b, "a_only": only_a, "p_value": float(f"{p:.4g}")}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int, seed: int,
                     alpha: float = ALPHA) -> dict[str, float]:
    """Interval of mean(b - a) over the same requests, and a two-sided bootstrap p-value for 'no difference'."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if d.size == 0:
        raise ValueError("paired_bootstrap needs at least one pair")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    # Share of resampled means on the other side of zero, doubled (capped at 1); the bootstrap cannot resolve
    # a p-value below 1/resamples, so that is the floor (never a misleading "p=0").
    p = min(1.0, max(1.0 / resamples, 2 * min(float((means <= 0).mean()), float((means >= 0).mean()))))
    return {"diff": round(float(d.mean()), 4), "diff_lo": round(float(lo), 4), "diff_hi": round(float(hi), 4),
            "p_value": float(f"{p:.4g}")}


def rank_agreement(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation of paired values (ties get their average rank); None when it is undefined:
    fewer than 3 pairs, or one side constant (no ranking to agree with)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"rank agreement needs paired values, got {x.size} and {y.size}")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return round(float(spearmanr(x, y).statistic), 4)
