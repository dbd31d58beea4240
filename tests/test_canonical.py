"""The canonical request grammar: round trip over a synthetic corpus, rendering to valid code, errors."""

from __future__ import annotations

import pytest

from airflow_net.dagcheck import check_source, extract_structure
from airflow_net.data.canonical import (
    CanonicalError,
    canonical_to_dag_source,
    format_canonical,
    parse_canonical,
)
from airflow_net.data.factory import generate

SPECS = [s for s, _ in generate(300, seed=3, airflow3_share=0.7, max_tasks=4)]


def test_corpus_is_varied_enough_to_mean_something():
    assert len({s.dag_id for s in SPECS}) > 100
    assert sum(bool(s.groups) for s in SPECS) > 30
    assert any(s.schedule is None for s in SPECS) and any(s.schedule and " " in s.schedule for s in SPECS)


def test_round_trip_over_the_corpus():
    for s in SPECS:
        text = format_canonical(s)
        assert "\n" not in text
        c = parse_canonical(text)
        assert c.dag_id == s.dag_id
        assert c.schedule == s.schedule
        assert c.tasks == {t.task_id: t.operator for t in s.tasks}
        assert sorted(c.edges) == sorted(set(s.edges)) and len(c.edges) == len(set(s.edges))
        assert sorted(c.groups) == sorted(s.groups)
        assert format_canonical(s) == text  # deterministic


@pytest.mark.parametrize("airflow", [3, 2])
def test_rendered_source_passes_dagcheck_and_reextracts_to_the_spec(airflow):
    for s in SPECS:
        code = canonical_to_dag_source(format_canonical(s), airflow=airflow)
        report = check_source(code, airflow=airflow)
        assert report.ok, (s.dag_id, [f.message for f in report.findings if f.severity == "error"])
        assert extract_structure(code).to_dict() == s.structure().to_dict()


def test_example_from_the_design_notes():
    c = parse_canonical("dag orders_sync | schedule */15 * * * * | wait_for_orders[FileSensor] >> load_orders[Bash]"
                        " >> refresh_view[@task]")
    assert c.schedule == "*/15 * * * *"
    assert c.tasks == {"wait_for_orders": "FileSensor", "load_orders": "BashOperator", "refresh_view": "@task"}
    assert c.edges == [("wait_for_orders", "load_orders"), ("load_orders", "refresh_view")]


@pytest.mark.parametrize("text,pos,expected", [
    ("dg x | schedule @daily | a[Bash]", 0, "'dag '"),
    ("dag x | schedule every day | a[Bash]", 17, "a schedule"),
    ("dag x | schedule @daily | a >> b[Bash]", 26, "[Operator] at the first mention of a"),
    ("dag x | schedule @daily | a[Bash] b[Bash]", 33, "' >> ', ' ; '"),
    ("dag x | schedule @daily | a[Bash] >> b[Bash] ; b >> a", 53, "without a cycle"),
    ("dag x | schedule @daily", 17, "a schedule followed by"),
])
def test_errors_name_position_and_expectation(text, pos, expected):
    with pytest.raises(CanonicalError) as e:
        parse_canonical(text)
    assert e.value.pos == pos
    assert expected in str(e.value)


def test_unknown_operator_is_refused_when_rendering():
    with pytest.raises(ValueError, match="cannot be rendered"):
        canonical_to_dag_source("dag x | schedule @daily | a[S3KeySensor]")
