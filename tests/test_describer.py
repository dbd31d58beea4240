"""The offline describer: varied requests that carry the structure, and never code."""

from __future__ import annotations

import random
import re
import statistics
from pathlib import Path

import pytest

from airflow_net.data.describer import (
    VARIANTS,
    dependency_plan,
    describe,
    instructions_for,
    plan_edges,
    schedule_phrases,
)
from airflow_net.data.factory import generate
from airflow_net.data.spec import DagSpec, TaskSpec


@pytest.fixture(scope="module")
def specs() -> list[DagSpec]:
    return [sp for sp, _ in generate(300, seed=99, airflow3_share=0.6, max_tasks=8)]


@pytest.fixture(scope="module")
def described(specs) -> list[tuple[DagSpec, list[tuple[str, str]]]]:
    return [(sp, instructions_for(sp, 3, random.Random(f"t:{i}"))) for i, sp in enumerate(specs)]


def _local(t: TaskSpec) -> str:
    return t.task_id.split(".", 1)[1] if t.group else t.task_id


def _outside_backticks(text: str) -> str:
    return " ".join(text.split("`")[0::2])


def _spec(edges: list[tuple[str, str]], ids: list[str], **kw) -> DagSpec:
    return DagSpec(
        dag_id=kw.pop("dag_id", "hand_made"),
        schedule=kw.pop("schedule", "0 6 * * *"),
        start_date="2024-01-01",
        tasks=[TaskSpec(t, "BashOperator", {"bash_command": f"echo {t}"}) for t in ids],
        edges=edges,
        purpose="test the describer",
        **kw,
    )


def test_n_distinct_instructions_cycling_variants(specs):
    for i, spec in enumerate(specs[:40]):
        for n in (1, 3, 5, 10):
            got = instructions_for(spec, n, random.Random(i))
            assert len(got) == n
            assert [v for v, _ in got] == [VARIANTS[j % 3] for j in range(n)]
            assert len({t for _, t in got}) == n, spec.dag_id


def test_seeded(specs):
    a = [instructions_for(sp, 3, random.Random(i)) for i, sp in enumerate(specs[:30])]
    b = [instructions_for(sp, 3, random.Random(i)) for i, sp in enumerate(specs[:30])]
    assert a == b


def test_every_instruction_names_the_dag_tasks_groups_and_schedule(described):
    """All three variants carry the dag_id, every task id (within its group), every group and the schedule."""
    for spec, pairs in described:
        for variant, text in pairs:
            assert f"`{spec.dag_id}`" in text, (variant, text)
            for t in spec.tasks:
                assert f"`{_local(t)}`" in text, (variant, _local(t), text)
            for g in spec.groups:
                assert f"`{g}`" in text, (variant, g, text)
            said = any(p in text for p in schedule_phrases(spec.schedule))
            assert said, (variant, spec.schedule, text)
            if spec.airflow == 2 and variant != "terse":
                assert "Airflow 2" in text, (variant, text)


def test_terse_names_airflow_2_too(described):
    for spec, pairs in described:
        if spec.airflow == 2:
            assert "Airflow 2" in pairs[0][1]


def test_no_code_in_requests(described):
    code = re.compile(
        r"\bdef \w+\(|\bfrom [\w.]+ import\b|^import |>>|<<|with DAG|task_id=|python_callable|\(\)|^\s{4}|\bchain\(",
        re.M,
    )
    for _, pairs in described:
        for _, text in pairs:
            assert "\n" not in text
            outside = _outside_backticks(text)
            assert not code.search(outside), outside
            # quoted parts are names, commands, SQL or templates, never Python statements
            for quoted in text.split("`")[1::2]:
                assert not re.search(r"\bdef |\bimport |>>|task_id=", quoted), quoted


def test_lengths_by_variant(described):
    lengths = {v: [len(t) for _, pairs in described for vv, t in pairs if vv == v] for v in VARIANTS}
    mean = {v: statistics.mean(x) for v, x in lengths.items()}
    assert mean["terse"] < mean["business"] < mean["detailed"]
    assert 120 < mean["terse"] < 500
    assert max(lengths["terse"]) < 900
    assert 500 < mean["detailed"] < 1800
    assert max(lengths["detailed"]) < 3500
    sentences = [len(re.findall(r"[.!?](\s|$)", t)) for _, pairs in described for v, t in pairs if v == "terse"]
    assert statistics.median(sentences) <= 3


def test_variety(described):
    """Many templates: openings differ a lot across the corpus."""
    for variant in VARIANTS:
        openings = {" ".join(t.split()[:3]) for _, pairs in described for v, t in pairs if v == variant}
        assert len(openings) >= 5, (variant, openings)
    texts = [t for _, pairs in described for _, t in pairs]
    assert len(set(texts)) == len(texts)


def test_dependency_plan_is_exact(specs):
    for spec in specs:
        plan = dependency_plan(spec)
        assert plan_edges(plan) == set(spec.edges), spec.dag_id
        assert plan.layered  # the factory's DAGs are layered; the fallback is tested below


def test_dependency_plan_fallback_for_unlayered_graphs():
    # a -> b -> d, a -> c, c -> d, a -> d (a skip edge: no layering says it)
    spec = _spec([("a", "b"), ("b", "d"), ("a", "c"), ("c", "d"), ("a", "d")], ["a", "b", "c", "d"])
    plan = dependency_plan(spec)
    assert not plan.layered
    assert plan_edges(plan) == set(spec.edges)
    text = describe(spec, "detailed", random.Random(0))
    clauses = [c for c in re.split(r"[;.] ", text) if "`d`" in c and ("after" in c or "wait" in c or "finish" in c)]
    assert clauses and all(f"`{u}`" in clauses[0] for u in ("a", "b", "c")), text


def test_pairwise_and_parallel_words():
    spec = _spec([("a1", "b1"), ("a2", "b2"), ("b1", "c"), ("b2", "c")], ["a1", "a2", "b1", "b2", "c"])
    plan = dependency_plan(spec)
    assert plan.stages == [["a1", "a2"], ["b1", "b2"], ["c"]] and plan.links == ["pairwise", "full"]
    for seed in range(5):
        text = describe(spec, "detailed", random.Random(seed))
        assert "`b1` after `a1`" in text and "`b2` after `a2`" in text


def test_single_task_and_independent_tasks():
    one = _spec([], ["only"])
    two = _spec([], ["x", "y"])
    for v in VARIANTS:
        assert "`only`" in describe(one, v, random.Random(1))
        text = describe(two, v, random.Random(1))
        assert "`x`" in text and "`y`" in text
    assert plan_edges(dependency_plan(two)) == set()


def test_schedule_words():
    assert "every day at 06:00" in schedule_phrases("0 6 * * *")
    assert "on weekdays at 09:30" in schedule_phrases("30 9 * * 1-5")
    assert "every Monday at 07:00" in schedule_phrases("0 7 * * 1")
    assert "every 4 hours" in schedule_phrases("0 */4 * * *")
    assert "every 15 minutes" in schedule_phrases("*/15 * * * *")
    assert "on the 1st of every month at 02:00" in schedule_phrases("0 2 1 * *")
    assert any("manual" in p for p in schedule_phrases(None))
    assert schedule_phrases("5 4 3 2 1") == ["on the cron schedule `5 4 3 2 1`"]


def test_errors():
    spec = _spec([("a", "b"), ("b", "a")], ["a", "b"])
    with pytest.raises(ValueError, match="cycle"):
        describe(spec, "terse", random.Random(0))
    with pytest.raises(ValueError, match="variant"):
        describe(_spec([], ["a"]), "poem", random.Random(0))


def test_canonical_is_a_fourth_style_switched_by_instruct_canonical():
    from airflow_net.data.canonical import parse_canonical
    from airflow_net.data.factory import generate
    from airflow_net.data.instruct import run_instruct
    from airflow_net.params import InstructParams

    recs = [{"uid": f"u{i}", "spec": s.to_dict(), "source": src, "origin": "synthetic"}
            for i, (s, src) in enumerate(generate(5, seed=2, airflow3_share=1.0, max_tasks=4))]
    on, _ = run_instruct(recs, InstructParams(), 0, Path("."))
    off, _ = run_instruct(recs, InstructParams(canonical=False), 0, Path("."))
    assert len(on) == 20 and len(off) == 15
    canon = [p for p in on if p["variant"] == "canonical"]
    assert len(canon) == 5 and not any(p["variant"] == "canonical" for p in off)
    for p in canon:
        assert parse_canonical(p["instruction"]).dag_id == p["spec"]["dag_id"]
