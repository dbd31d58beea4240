"""Judging generated DAGs: code extraction, set F1, aggregation."""

from __future__ import annotations

from airflow_net.data.spec import DagStructure
from airflow_net.evaluate.metrics import Judgement, aggregate, extract_code, facts, prf


def test_extract_code_from_fence_closed_open_and_bare() -> None:
    assert extract_code("Here:\n```python\nx = 1\n```\nbye") == "x = 1\n"
    assert extract_code("```py\nx = 1\ny = 2") == "x = 1\ny = 2\n"  # cut off by max_tokens
    assert extract_code("x = 1") == "x = 1\n"


def test_prf() -> None:
    assert prf(set(), set()) == (1.0, 1.0, 1.0)
    assert prf({1, 2}, set()) == (0.0, 0.0, 0.0)
    p, r, f = prf({1, 2, 3, 4}, {1, 2})
    assert (p, r) == (0.5, 1.0) and abs(f - 2 / 3) < 1e-9


def test_facts_treat_preset_and_cron_alike() -> None:
    a = DagStructure("d", "@daily", {"a": "BashOperator"}, {("a", "b")})
    b = DagStructure("d", "0 0 * * *", {"a": "PythonOperator"}, {("a", "b")})
    assert facts(a) == facts(b)  # operators are judged separately (operator_accuracy)


def test_aggregate_rates_and_error_breakdown() -> None:
    js = [
        Judgement(parsed=True, valid=True, structural_f1=1.0, task_f1=1.0, edge_f1=1.0),
        Judgement(parsed=True, valid=False, error_codes=["DC201", "DC301"]),
        Judgement(parsed=False, valid=False, error_codes=["DC001"]),
        Judgement(parsed=True, valid=False, error_codes=["DC201"]),
    ]
    extra = [{"completion_tokens": 10, "seconds": 1.0, "finish_reason": "stop"}] * 3 + [
        {"completion_tokens": 30, "seconds": 1.0, "finish_reason": "length"}
    ]
    m = aggregate(js, extra)
    assert m["n"] == 4 and m["parse_rate"] == 0.75 and m["valid_rate"] == 0.25
    assert m["structural_f1"] == 0.25
    assert m["errors"] == {"DC001": 1, "DC201": 2, "DC301": 1}
    assert m["truncated_rate"] == 0.25 and "tokens_per_second" not in m
