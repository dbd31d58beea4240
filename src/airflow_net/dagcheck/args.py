"""Operator and sensor arguments against the constructor signatures recorded in the API index."""

from __future__ import annotations

import ast
import difflib

from airflow_net.dagcheck.api import ApiIndex
from airflow_net.dagcheck.findings import Finding, make_finding
from airflow_net.dagcheck.interp import DictV, Interpreter, Ref

# Arguments every operator accepts through BaseOperator's **kwargs handling in both versions.
ALWAYS_OK = {"task_id", "dag", "task_group"}


def check_operator_args(interp: Interpreter, airflow: int, index: ApiIndex) -> list[Finding]:
    out: list[Finding] = []
    # A loop, comprehension or helper function runs the same call many times: judge each call site once.
    seen: set[int] = set()
    for task in interp.tasks:
        ref = task.op_ref
        if not isinstance(ref, Ref) or task.call is None or id(task.call) in seen:
            continue
        seen.add(id(task.call))
        info = index.class_info(ref.path, airflow)
        if not info:
            continue
        params = set(info.get("params", ()))
        given = {k for k in task.kwargs}
        node = task.call
        line, col = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        if not info.get("accepts_kwargs"):
            for k in sorted(given - params - ALWAYS_OK):
                close = difflib.get_close_matches(k, sorted(params), n=1, cutoff=0.7)
                kw_node = next((kw for kw in getattr(node, "keywords", []) if kw.arg == k), node)
                out.append(make_finding(
                    "DC201", getattr(kw_node, "lineno", line), getattr(kw_node, "col_offset", col),
                    f"{ref.name} does not accept the argument {k!r} in Airflow {airflow}",
                    f"Did you mean {close[0]!r}?" if close else f"Remove {k}="))
        complete = task.kwargs_complete
        defaults = task.dag.default_args if task.dag is not None else None
        if task.dag is not None and task.dag.has_default_args and not (isinstance(defaults, DictV) and defaults.complete):
            continue  # default_args we cannot read may supply any argument
        supplied = given | (set(str(k) for k in defaults.items) if isinstance(defaults, DictV) else set())
        if complete and not _has_positional(node):
            for r in info.get("required", ()):
                if r not in supplied:
                    out.append(make_finding("DC202", line, col,
                                            f"{ref.name} is missing the required argument {r!r}",
                                            f"Pass {r}=..."))
    return out


def _has_positional(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and bool(node.args)
