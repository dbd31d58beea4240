"""Repair conversations for training: a valid DAG with one planted defect, dagcheck's findings, the fix.

Defects come from the same mutators dagcheck's agreement tests use (``dagcheck.corpus``). A conversation is
kept only when dagcheck reports exactly the planted defect's code (no extra or missing error), so the model
learns to answer the findings it will really be shown. Not yet wired into the prepare stage (see the report).
"""

from __future__ import annotations

import random
from typing import Any

from airflow_net.dagcheck.corpus import Example, mutate
from airflow_net.dagcheck.validate import validate_sources
from airflow_net.generate.strategies import format_findings


def repair_conversations(request: str, source: str, *, airflow: int = 3, system: str | None = None,
                         seed: int = 0, max_per_dag: int = 1) -> list[dict[str, Any]]:
    """Up to ``max_per_dag`` repair conversations for one valid DAG (its request and source), chosen by seed.

    Each row: ``messages`` (system?, user request, assistant defective DAG, user findings, assistant original),
    ``mutation`` and ``codes`` (the error codes dagcheck reported on the defective DAG).
    """
    muts = mutate(Example("dag.py", source, airflow))
    random.Random(seed).shuffle(muts)
    out = []
    for m in muts:
        rep = validate_sources([("dag.py", m.source)], airflow=airflow)[0]
        codes = sorted({f.code for f in rep.errors})
        if codes != [m.expected]:  # the validator must report exactly the planted defect
            continue
        head = [{"role": "system", "content": system}] if system else []
        msgs = head + [
            {"role": "user", "content": request},
            {"role": "assistant", "content": f"```python\n{m.source}```"},
            {"role": "user", "content": format_findings(rep.errors)},
            {"role": "assistant", "content": f"```python\n{source}```"},
        ]
        out.append({"messages": msgs, "mutation": m.mutation, "codes": codes})
        if len(out) >= max_per_dag:
            break
    return out
