"""Splits are made by DAG: no DAG's instructions leak across splits; lengths are measured."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_net.data.prepare import (
    compare_to_last_run,
    length_stats,
    packed_rows,
    split_by_dag,
    split_uids,
    train_cost,
)
from airflow_net.params import PrepareParams
from airflow_net.utils import UserError


def pairs(n_dags: int, per: int = 3) -> list[dict]:
    return [
        {"uid": f"d{i:03d}", "instruction": f"make dag {i} v{k}", "variant": str(k), "source": f"x = {i}\n", "spec": None}
        for i in range(n_dags)
        for k in range(per)
    ]


def test_split_by_dag_has_no_leakage_and_is_seeded() -> None:
    params = PrepareParams(val_frac=0.1, test_frac=0.2)
    a = split_by_dag(pairs(50), params, seed=1)
    b = split_by_dag(pairs(50), params, seed=1)
    c = split_by_dag(pairs(50), params, seed=2)
    uids = {s: {r["uid"] for r in rows} for s, rows in a.items()}
    assert not (uids["train"] & uids["test"]) and not (uids["train"] & uids["val"]) and not (uids["val"] & uids["test"])
    assert 3 <= len(uids["test"]) <= 17 and 1 <= len(uids["val"]) <= 11 and len(uids["train"]) >= 25
    assert sum(len(r) for r in a.values()) == 150
    assert a == b and uids["test"] != {r["uid"] for r in c["test"]}
    row = a["train"][0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][2]["content"].startswith("```python\n")


def test_a_dags_split_does_not_depend_on_the_other_dags() -> None:
    """The base stage splits the corpus' uids, prepare the instructed ones: the same DAG, the same split."""
    params = PrepareParams(val_frac=0.1, test_frac=0.1)
    uids = [f"d{i:04d}" for i in range(2000)]
    full = split_uids(uids, params, seed=7)
    half = split_uids(uids[::2], params, seed=7)
    for split, members in half.items():
        assert set(members) <= set(full[split])
    assert abs(len(full["test"]) / 2000 - 0.1) < 0.03 and abs(len(full["val"]) / 2000 - 0.1) < 0.03


def test_too_few_dags_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="too few"):
        split_by_dag(pairs(2), PrepareParams(val_frac=0.4, test_frac=0.4), seed=0)


def test_length_stats_truncation_rate() -> None:
    full = np.array([100, 200, 300, 400])
    s = length_stats(full, np.array([10, 20, 30, 40]), max_seq_len=250)
    assert s["truncated"] == 2 and s["truncation_rate"] == 0.5 and s["tokens_max"] == 400


def test_packing_is_best_fit_decreasing_and_truncates_to_the_row() -> None:
    rows = packed_rows(np.array([600, 500, 400, 300, 200, 100, 1500]), 1024)
    # 1500 is cut to 1024 and fills a row alone; 400 goes beside 600 (the fullest row it fits), 300 and 200
    # beside 500; 100 fits nowhere and opens a fourth row
    assert sorted(rows.tolist()) == [100, 1000, 1000, 1024]
    assert packed_rows(np.array([100] * 8), 400).tolist() == [400, 400]


def test_a_longer_row_costs_more_than_its_tokens_and_the_estimate_scales_the_last_run() -> None:
    lengths = np.random.default_rng(0).integers(300, 900, size=2000)
    short = train_cost(lengths, 1024, rows_per_step=8, packing=True)
    long = train_cost(lengths, 4096, rows_per_step=8, packing=True)
    assert long["tokens_per_step"] > 3.5 * short["tokens_per_step"]
    assert long["cost_per_step"] / short["cost_per_step"] > long["tokens_per_step"] / short["tokens_per_step"]
    last = {"max_seq_len": 1024, "steps": 130, "seconds": 340.0, "cost_per_step": short["cost_per_step"]}
    est = compare_to_last_run(long, last, max_steps=130)
    assert est["relative_step_time"] == round(long["cost_per_step"] / short["cost_per_step"], 2)
    assert est["estimated_train_seconds"] == pytest.approx(340.0 * est["relative_step_time"], rel=0.01)
    same = compare_to_last_run(short, last, max_steps=130)
    assert same["relative_step_time"] == 1.0 and same["estimated_train_seconds"] == 340
    # no comparable run (none yet, or one recorded before the cost existed): no estimate, not a guess
    assert compare_to_last_run(long, None, 130) == {} and compare_to_last_run(long, {"steps": 130, "seconds": 9}, 130) == {}
