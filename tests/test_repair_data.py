"""Repair training conversations: the planted defects are exactly those dagcheck reports."""

from __future__ import annotations

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
