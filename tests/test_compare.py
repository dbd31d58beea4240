"""The strategies side by side: which requests, and the numbers a strategy is compared by."""

from __future__ import annotations

import pytest

from airflow_net.data.canonical import format_canonical
from airflow_net.data.factory import generate
from airflow_net.generate.compare import compare_requests, run_requests, summarise
from airflow_net.generate.strategies import dagcheck_judge

SPECS = [s for s, _ in generate(12, seed=11, airflow3_share=0.7, max_tasks=3)]


def _rows(n_per_dag: int = 2) -> list[dict]:
    rows = []
    for i, s in enumerate(SPECS):
        for v in range(n_per_dag):
            rows.append({"uid": f"u{i}", "variant": ["terse", "canonical"][v], "spec": s.to_dict(), "airflow": s.airflow,
                         "messages": [{"role": "system", "content": "x"},
                                      {"role": "user", "content": f"request {v} for {s.dag_id}" if v == 0
                                       else format_canonical(s)}]})
    return rows


def test_the_same_dags_asked_twice_describer_and_person_style_seeded() -> None:
    a = compare_requests(_rows(), 5, seed=1)
    assert a == compare_requests(_rows(), 5, seed=1) and a != compare_requests(_rows(), 5, seed=2)
    desc, person = [r for r in a if r["group"] == "describer"], [r for r in a if r["group"] == "person"]
    assert len(desc) == len(person) == 5 and len({r["uid"] for r in desc}) == 5  # one request per DAG
    assert [r["uid"] for r in desc] == [r["uid"] for r in person]
    for r in person:  # the noiser keeps the ids a person would type
        assert r["spec"]["dag_id"] in r["request"] and r["variant"] == "person"


def test_templated_on_canonical_requests_costs_no_tokens_and_the_summary_counts_per_valid_dag() -> None:
    reqs = [{"uid": f"u{i}", "group": "describer", "variant": "canonical", "request": format_canonical(s),
             "spec": s.to_dict(), "airflow": s.airflow} for i, s in enumerate(SPECS[:4])]

    def no_model(*_a, **_k):
        pytest.fail("templated must not call the model for a canonical request")

    rows = run_requests("templated", reqs, no_model, {2: dagcheck_judge(2), 3: dagcheck_judge(3)}, system_prompt="x")
    assert all(r["valid"] and r["structural_f1"] == 1.0 and r["completion_tokens"] == 0 for r in rows)
    m = summarise(rows, resamples=200, seed=0)
    assert m["describer"]["valid_rate"] == 1.0 and m["describer"]["tokens_per_valid_dag"] == 0.0
    assert m["all"]["seconds_per_valid_dag"] == pytest.approx(m["all"]["seconds_per_request"], rel=0.01)
    assert "person" not in m
    # nothing valid: the cost per valid DAG is unbounded, reported as null rather than a number
    bad = [dict(r, valid=False) for r in rows]
    assert summarise(bad, resamples=200, seed=0)["all"]["seconds_per_valid_dag"] is None
