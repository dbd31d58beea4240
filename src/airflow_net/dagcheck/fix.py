"""Fixes dagcheck can make on its own: the import a finding names (DC102 "used but not imported").

A DC102 finding's hint is the exact line Airflow's API index gives for the name (``Add `from X import Y```).
:func:`fix_imports` adds each such line after the file's leading imports, then checks the result: the fixed
source is returned only when it has fewer errors than the original (never a worse file). Like ``ruff --fix``
for one rule: deterministic, no model, no import or run of the code.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from airflow_net.dagcheck.core import check_source
from airflow_net.dagcheck.findings import Report

_HINT = re.compile(r"^Add `((?:from [\w.]+ )?import [\w., ]+)`$")


@dataclass
class Fixed:
    source: str
    report: Report
    added: list[str] = field(default_factory=list)  # the import lines added (empty: nothing fixed)


def _insert_at(tree: ast.Module) -> int:
    """The line after the module docstring and the imports that open the file (0: the very top)."""
    line = 0
    for i, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            line = node.end_lineno or line
        else:
            break
    return line


def fix_imports(source: str, *, airflow: int = 3, report: Report | None = None) -> Fixed:
    """``source`` with the imports its DC102 findings name added; unchanged when there are none, when it does
    not parse, or when adding them would not lower the error count."""
    report = report or check_source(source, airflow=airflow)
    lines = list(dict.fromkeys(m.group(1) for f in report.errors if f.code == "DC102" and f.hint
                               and (m := _HINT.match(f.hint))))
    if not lines:
        return Fixed(source, report)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return Fixed(source, report)
    at = _insert_at(tree)
    out = source.split("\n")
    out[at:at] = lines
    fixed = "\n".join(out)
    new = check_source(fixed, airflow=airflow)
    if len(new.errors) >= len(report.errors):
        return Fixed(source, report)
    return Fixed(fixed, new, lines)
