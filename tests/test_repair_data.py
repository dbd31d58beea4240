"""Repair training conversations: the planted defects are exactly those dagcheck reports."""

from __future__ import annotations

import pytest

from airflow_net.dagcheck.validate import validate_sources
from airflow_net.evaluate.metrics import extract_code
from airflow_net.generate.repair_data import repair_conversations
from tests.support.tiny_gguf import DAG, INSTRUCTION


def test_planted_defects_are_exactly_what_dagcheck_reports():
    rows = repair_conversations(INSTRUCTION, DAG, airflow=3, seed=0, max_per_dag=20)
    assert len(rows) >= 3, [r["mutation"] for r in rows]
    for r in rows:
        broken = extract_code(r["messages"][1]["content"])
        rep = validate_sources([("d.py", broken)], airflow=3)[0]
        assert sorted({f.code for f in rep.errors}) == r["codes"] and len(r["codes"]) == 1
        for f in rep.errors:  # the follow-up turn carries exactly those findings
            assert f"{f.code} line {f.line}: {f.message}" in r["messages"][2]["content"]
        assert extract_code(r["messages"][3]["content"]) == DAG  # the answer is the original
        assert validate_sources([("d.py", DAG)], airflow=3)[0].ok


def test_seeded_choice_is_reproducible():
    a = repair_conversations(INSTRUCTION, DAG, seed=3)
    assert a == repair_conversations(INSTRUCTION, DAG, seed=3) and len(a) == 1


def test_prepare_mixes_repair_conversations_for_a_share_of_train_dags():
    from airflow_net.data.factory import generate
    from airflow_net.data.prepare import assistant_answer, repair_rows, to_messages

    train = []
    for i, (spec, source) in enumerate(generate(40, seed=5, airflow3_share=0.5, max_tasks=4)):
        uid = f"{i:016x}"
        for k in range(2):  # two requests per DAG: only the first one gets a repair conversation
            train.append({"messages": to_messages("sys", f"request {k} for {spec.dag_id}", source),
                          "uid": uid, "airflow": spec.airflow, "spec": spec.to_dict()})
    assert repair_rows(train, 0.0, "sys", seed=0) == []
    rows = repair_rows(train, 0.5, "sys", seed=0)
    assert rows == repair_rows(train, 0.5, "sys", seed=0)  # seeded
    assert 8 <= len({r["uid"] for r in rows}) <= 32 and len(rows) == len({r["uid"] for r in rows})
    by_uid = {r["uid"]: r for r in train[::-1]}  # the first request of each DAG
    for r in rows:
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"]
        assert r["messages"][1]["content"] == by_uid[r["uid"]]["messages"][1]["content"]
        assert r["messages"][2]["weight"] == 0 and "weight" not in r["messages"][4]
        assert r["messages"][4]["content"] == by_uid[r["uid"]]["messages"][-1]["content"]
        broken = extract_code(r["messages"][2]["content"])
        rep = validate_sources([("d.py", broken)], airflow=r["airflow"])[0]
        assert sorted({f.code for f in rep.errors}) == r["codes"] and len(r["codes"]) == 1
        assert r["messages"][4]["content"] == assistant_answer(extract_code(r["messages"][4]["content"]))
    assert len({r["uid"] for r in repair_rows(train, 1.0, "sys", seed=0)}) >= 35


def test_repair_conversations_that_do_not_fit_are_left_out():
    """prepare keeps a repair conversation only when it fits train.max_seq_len (a cut one would train on half an
    answer); rows and lengths must line up."""
    from airflow_net.data.prepare import fitting

    rows = [{"uid": str(i)} for i in range(4)]
    assert [r["uid"] for r in fitting(rows, [900, 1024, 1025, 40], 1024)] == ["0", "1", "3"]
    with pytest.raises(ValueError, match="3 rows but 2 lengths"):
        fitting(rows[:3], [1, 2], 1024)
