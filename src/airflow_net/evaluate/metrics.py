"""Judging generated DAGs: does the code parse, does it pass the validator, does it build what was asked.

The structural match compares the request's spec with what the validator reads back from the code
(statically: the generated code is never imported or run here).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from airflow_net.data.spec import DagSpec, DagStructure, normalize_schedule

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The code in a model's answer: the first fenced block (closed or cut off), else the whole text."""
    m = _FENCE.search(text)
    return (m.group(1) if m else text).strip() + "\n"


def prf(pred: set, gold: set) -> tuple[float, float, float]:
    """Precision, recall, F1 of two sets; two empty sets agree perfectly."""
    if not pred and not gold:
        return 1.0, 1.0, 1.0
    tp = len(pred & gold)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gold) if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def facts(s: DagStructure) -> set[tuple]:
    """Everything a request pins down, as comparable items: one F1 over all of them."""
    out: set[tuple] = {("dag_id", s.dag_id), ("schedule", normalize_schedule(s.schedule))}
    out |= {("task", t) for t in s.tasks}
    out |= {("edge", a, b) for a, b in s.edges}
    return out


@dataclass
class Judgement:
    parsed: bool
    valid: bool
    error_codes: list[str] = field(default_factory=list)
    warning_codes: list[str] = field(default_factory=list)  # e.g. DC105 deprecated import: valid, but an error class
    dag_id_match: bool = False
    schedule_match: bool = False
    task_precision: float = 0.0
    task_recall: float = 0.0
    task_f1: float = 0.0
    edge_f1: float = 0.0
    structural_f1: float = 0.0
    operator_accuracy: float = 0.0  # among the requested tasks that exist, the share with the right operator

    def to_row(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["error_codes"] = " ".join(self.error_codes)
        d["warning_codes"] = " ".join(self.warning_codes)
        return d


def judge(code: str, spec: dict[str, Any] | None, airflow: int = 3) -> Judgement:
    from airflow_net.dagcheck import check_source, extract_structure

    try:
        ast.parse(code)
        parsed = True
    except (SyntaxError, ValueError):
        parsed = False
    report = check_source(code, filename="generated.py", airflow=airflow)
    codes = sorted({f.code for f in report.findings if f.severity == "error"})
    warns = sorted({f.code for f in report.findings if f.severity != "error"})
    j = Judgement(parsed=parsed, valid=report.ok, error_codes=codes, warning_codes=warns)
    if spec is None:
        return j
    gold = DagSpec.from_dict(spec).structure()
    got = extract_structure(code) if parsed else None
    if got is None:
        return j
    j.dag_id_match = got.dag_id == gold.dag_id
    j.schedule_match = normalize_schedule(got.schedule) == normalize_schedule(gold.schedule)
    j.task_precision, j.task_recall, j.task_f1 = prf(set(got.tasks), set(gold.tasks))
    j.edge_f1 = prf(got.edges, gold.edges)[2]
    j.structural_f1 = prf(facts(got), facts(gold))[2]
    common = set(got.tasks) & set(gold.tasks)
    j.operator_accuracy = sum(got.tasks[t] == gold.tasks[t] for t in common) / len(gold.tasks) if gold.tasks else 0.0
    return j


def aggregate(judgements: list[Judgement], extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Rates and means over one model's generations, with the error breakdown by validator code."""
    n = len(judgements)
    if n == 0:
        return {"n": 0}

    def mean(attr: str) -> float:
        return round(sum(float(getattr(j, attr)) for j in judgements) / n, 4)

    errors = Counter(c for j in judgements for c in j.error_codes)
    out: dict[str, Any] = {
        "n": n,
        "parse_rate": mean("parsed"),
        "valid_rate": mean("valid"),
        "structural_f1": mean("structural_f1"),
        "task_f1": mean("task_f1"),
        "edge_f1": mean("edge_f1"),
        "dag_id_match": mean("dag_id_match"),
        "schedule_match": mean("schedule_match"),
        "operator_accuracy": mean("operator_accuracy"),
        "errors": dict(sorted(errors.items())),
    }
    if extra:
        toks = [e.get("completion_tokens", 0) for e in extra]
        out["mean_completion_tokens"] = round(sum(toks) / n, 1)
        out["truncated_rate"] = round(sum(e.get("finish_reason") == "length" for e in extra) / n, 4)
        # speed is a run fact: metrics/generate.json has it; these metrics depend only on the answers
    return out
