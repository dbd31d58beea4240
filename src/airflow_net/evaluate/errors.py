"""Error classes in plain words: what went wrong in a generated DAG, beyond "the validator said no".

Each check reads the code statically (the AST, dagcheck's codes, a secrets scanner): generated code is never run.
"""

from __future__ import annotations

import ast
from typing import Any

from airflow_net.dagcheck.findings import DEPRECATION_CODES as _DAGCHECK_DEPRECATION_CODES

# dagcheck codes that mean "syntax the target Airflow version deprecated or removed": the ones dagcheck reports as
# deprecated-but-loading warnings (DC105, ruff's AIR3xx where the path still loads), plus DC104, an import the
# target removed (an error). Both are the "ancient syntax" the design notes ask about, reported apart from validity.
DEPRECATION_CODES = _DAGCHECK_DEPRECATION_CODES | frozenset({"DC104"})

# Modules a DAG file must not lean on: Airflow's own test helpers, test frameworks, private internals.
NON_PUBLIC_PREFIXES = ("airflow.utils.tests", "tests", "unittest", "pytest", "airflow.tests", "dev.")
NON_PUBLIC_PARTS = frozenset({"tests", "test_utils", "_internal", "testing"})

# detect-secrets' entropy plugins flag ordinary identifiers in code ("retries = 3" included): only the
# keyword and known-key-format detectors are trusted here.
_NOISY_SECRET_TYPES = ("High Entropy",)

ERROR_CLASSES = {
    "syntax_error": "the answer is not valid Python",
    "undefined_name": "uses a name it never imports or defines",
    "non_public_import": "imports test helpers or internals (unittest, pytest, airflow.utils.tests, ...)",
    "deprecated_syntax": "uses imports or arguments the target Airflow version removed or deprecated",
    "hardcoded_secret": "a password, token or key written into the code",
    "missing_setup": "leaves out owner/retries/retry delay/start date that the request asked for",
    "truncated": "the answer was cut off at max_tokens",
}


def non_public_imports(tree: ast.AST) -> list[str]:
    mods = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            mods.append(node.module)
    return [m for m in mods if m.startswith(NON_PUBLIC_PREFIXES) or m in {"unittest", "pytest"}
            or NON_PUBLIC_PARTS & set(m.split("."))]


def secrets(code: str) -> list[str]:
    """Secret types detect-secrets finds, one per flagged line ("Secret Keyword", "AWS Access Key", ...)."""
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import default_settings

    found = []
    with default_settings():
        # A secret in Python source sits in a string literal: lines without a quote cannot hold one, and
        # skipping them halves the scan time (detect-secrets is most of evaluate's run time).
        for line in (ln for ln in code.splitlines() if "'" in ln or '"' in ln):
            found += [s.type for s in scan_line(line) if not any(n in s.type for n in _NOISY_SECRET_TYPES)]
    return found


def _setting_names(tree: ast.AST) -> set[str]:
    """Every keyword argument and string dict key in the file: where default_args settings can be written."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.Dict):
            names |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return names


def missing_setup(tree: ast.AST, spec: dict[str, Any]) -> list[str]:
    """The settings the spec asked for that the code never sets (by name; the value is the structural match's job)."""
    # spec key -> the Airflow argument that carries it; start_date is in every spec (Airflow needs it)
    want = {"start_date": "start_date", "owner": "owner", "retries": "retries", "retry_delay_minutes": "retry_delay"}
    names = _setting_names(tree)
    return [arg for key, arg in want.items() if spec.get(key) is not None and arg not in names]


def classify(code: str, spec: dict[str, Any] | None, codes: list[str], finish_reason: str | None) -> dict[str, str]:
    """The error classes one answer falls in, each with a one-line detail; an empty dict for a clean answer."""
    out: dict[str, str] = {}
    if finish_reason == "length":
        out["truncated"] = "finish_reason=length"
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        out["syntax_error"] = f"{type(exc).__name__}: {getattr(exc, 'msg', exc)} (line {getattr(exc, 'lineno', '?')})"
        tree = None
    if "DC101" in codes:
        out["undefined_name"] = "DC101"
    dep = sorted(DEPRECATION_CODES & set(codes))
    if dep:
        out["deprecated_syntax"] = " ".join(dep)
    if tree is not None:
        bad = non_public_imports(tree)
        if bad:
            out["non_public_import"] = ", ".join(sorted(set(bad)))
        if spec is not None:
            miss = missing_setup(tree, spec)
            if miss:
                out["missing_setup"] = ", ".join(miss)
    found = secrets(code)
    if found:
        out["hardcoded_secret"] = ", ".join(sorted(set(found)))
    return out
