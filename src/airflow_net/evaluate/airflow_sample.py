"""Real Airflow on a sample: load N generated DAGs per model with the sandboxed DagBag tier and compare its
verdict with the static validator's.

The same seeded sample of requests is used for both models, so the two load rates are paired. The Airflow
environment (`.airflow-env`, `make airflow-env`) is only needed when N > 0: asking for a sample without it is an
error, since the number asked for could not be produced; N = 0 (the default) records null.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from airflow_net.evaluate.stats import bootstrap_ci

log = logging.getLogger(__name__)


def sample_indices(n_rows: int, n: int, seed: int) -> list[int]:
    """N distinct row positions, seeded, sorted (all rows when N >= the number of rows)."""
    if n >= n_rows:
        return list(range(n_rows))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n_rows, size=n, replace=False))


def airflow_sample(per_model: dict[str, list[dict[str, Any]]], n: int, airflow: int, seed: int,
                   resamples: int) -> dict[str, Any] | None:
    """Per model: Airflow load rate with its 95% interval and the agreement of the static verdict with it.

    Rows carry `code` and `valid` (the static verdict), as built by `summary.judge_rows`."""
    if n <= 0:
        return None
    from airflow_net.dagcheck.airflow_tier import AirflowEngine

    first = next(iter(per_model.values()))
    idx = sample_indices(len(first), n, seed)
    out: dict[str, Any] = {"n": len(idx), "airflow": airflow}
    with AirflowEngine(airflow) as engine:
        out["airflow_version"] = engine.version
        for which, rows in per_model.items():
            loaded, static = [], []
            for i in idx:
                res = engine.check_source(rows[i]["code"], filename=f"{rows[i]['uid']}.py")
                loaded.append(float(res.ok))
                static.append(float(bool(rows[i]["valid"])))
            load = np.array(loaded)
            stat = np.array(static)
            lo, hi = bootstrap_ci(load, resamples, seed)
            out[which] = {
                "load_rate": round(float(load.mean()), 4), "load_rate_lo": round(lo, 4), "load_rate_hi": round(hi, 4),
                "static_agreement": round(float((load == stat).mean()), 4),
                # the two ways the static validator can be wrong about what Airflow does
                "static_valid_airflow_fails": int(((stat == 1) & (load == 0)).sum()),
                "static_invalid_airflow_loads": int(((stat == 0) & (load == 1)).sum()),
            }
            log.info("Airflow %s on %d %s DAGs: %s", engine.version, len(idx), which, out[which])
    return out
