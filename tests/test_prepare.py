"""Splits are made by DAG: no DAG's instructions leak across splits; lengths are measured."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_net.data.prepare import length_stats, split_by_dag, split_uids
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
