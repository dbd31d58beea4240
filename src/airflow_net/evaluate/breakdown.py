"""Who fails where: metrics split by request style, by what the request asked for and by the code's complexity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np


def request_facts(spec: dict[str, Any] | None) -> dict[str, Any]:
    """The requested complexity: task count, TaskGroups, XCom, sensors, TaskFlow vs classic, target Airflow."""
    if not spec:
        return {}
    tasks = spec.get("tasks", [])
    n = len(tasks)
    return {
        "tasks": "1-3" if n <= 3 else "4-6" if n <= 6 else "7-up",
        "taskgroups": bool(spec.get("groups")),
        "xcom": bool(spec.get("xcom")),
        "sensors": any("Sensor" in (t.get("operator") or "") for t in tasks),
        "style": spec.get("style", "classic"),
        "airflow": spec.get("airflow", 3),
    }


def code_facts(code: str) -> dict[str, Any]:
    """The generated code's size and cyclomatic complexity (radon; None when it does not parse)."""
    from radon.complexity import cc_visit

    lines = sum(1 for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    try:
        blocks = cc_visit(code)
        # Module-level code has complexity 1 in radon's sense; a DAG file is mostly that.
        cc = 1 + sum(b.complexity - 1 for b in blocks)
    except (SyntaxError, ValueError):
        cc = None
    return {
        "lines": "0-29" if lines < 30 else "30-59" if lines < 60 else "60-up",
        "cyclomatic": None if cc is None else "1-2" if cc <= 2 else "3-5" if cc <= 5 else "6-up",
    }


def breakdown(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any],
              metrics: tuple[str, ...] = ("valid_rate", "structural_f1", "parse_rate")) -> dict[str, dict[str, float]]:
    """Mean of each metric per group (rows carry the metric columns), groups sorted by name; None keys dropped."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        k = key(r)
        if k is not None:
            groups[str(k)].append(r)
    return {g: {"n": len(rs), **{m: round(float(np.mean([float(r[m]) for r in rs])), 4) for m in metrics}}
            for g, rs in sorted(groups.items())}
