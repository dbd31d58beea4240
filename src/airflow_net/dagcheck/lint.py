"""The lint tier: Ruff's Airflow rules (AIR*), run by ruff itself, mapped into dagcheck findings.

Ruff reads the code; it never imports it. Its codes are kept as they are (AIR001, AIR301, ...), with the
rule's name and fix message. Severity: AIR301/AIR302 ("removed in Airflow 3") is an error when the target is
Airflow 3 and the flagged import path does not load there (checked against the API index, whose removals were probed
in the real Airflow 3 environment): ruff also flags paths that Airflow 3 still imports through compatibility
shims, and those load, so they are warnings. Everything else (and everything when the target is Airflow 2) is
advice, a warning.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from airflow_net.dagcheck.findings import ERROR, WARNING, Finding
from airflow_net.utils import UserError

log = logging.getLogger(__name__)

ERROR_RULES_3 = {"AIR301", "AIR302"}
_PATH_RE = re.compile(r"`(airflow(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")


def _still_loads(message: str, airflow: int) -> bool:
    """The rule's target does not stop the loader: the first `airflow.x.y` path in a ruff message still
    imports in this Airflow (deprecated or fine), or the message names no import path at all (a context key
    such as `execution_date`, a method: those fail when a task runs, if ever, not when the DagBag parses the
    file; measured on Apache's example DAGs, which Airflow 3 loads with them), except a removed DAG argument."""
    from airflow_net.dagcheck.api import ApiIndex

    m = _PATH_RE.search(message)
    if not m:
        # A DAG argument that Airflow 3 removed (`schedule_interval=`) does stop the loader (TypeError).
        from airflow_net.dagcheck.static import DAG_ARGS_REMOVED_IN_3

        name = re.match(r"`(\w+)`", message)
        return not (name and name.group(1) in DAG_ARGS_REMOVED_IN_3)
    mod, _, name = m.group(1).rpartition(".")
    index = ApiIndex.load()
    st = index.check(mod, name, airflow)
    if st.status in ("ok", "deprecated"):
        return True
    return index.check(m.group(1), None, airflow).status in ("ok", "deprecated")


@functools.cache
def ruff_exe() -> str:
    """The ruff binary: beside this interpreter (a virtualenv), from the ruff package, or on PATH."""
    cand = Path(sys.executable).with_name("ruff")
    if cand.is_file():
        return str(cand)
    try:
        from ruff.__main__ import find_ruff_bin  # type: ignore[import-not-found]

        return str(find_ruff_bin())
    except Exception:
        pass
    exe = shutil.which("ruff")
    if exe:
        return exe
    raise UserError("the lint tier needs ruff: pip install ruff (it is in requirements.txt)")


def _to_finding(item: dict, airflow: int) -> Finding:
    code = item.get("code") or "AIR"
    severity = WARNING
    if airflow >= 3 and code in ERROR_RULES_3 and not _still_loads(item.get("message", ""), airflow):
        severity = ERROR
    loc = item.get("location") or {}
    fix = (item.get("fix") or {}).get("message") or ""
    return Finding(code=code, name=item.get("name") or "ruff", severity=severity, line=int(loc.get("row") or 0),
                   col=max(0, int(loc.get("column") or 1) - 1), message=item.get("message", ""),
                   hint=fix or (item.get("url") or ""), tier="lint")


def lint_sources(sources: dict[str, str], *, airflow: int = 3, timeout_s: float = 120.0) -> dict[str, list[Finding]]:
    """Ruff's AIR rules over many sources in one ruff run: {name: findings}. Names are file names."""
    out: dict[str, list[Finding]] = {name: [] for name in sources}
    if not sources:
        return out
    with tempfile.TemporaryDirectory(prefix="dagcheck-lint-") as tmp:
        paths: dict[str, str] = {}
        for i, (name, src) in enumerate(sources.items()):
            # One folder per file: the file keeps its own name, and names never collide.
            d = Path(tmp) / str(i)
            d.mkdir()
            p = d / (Path(name).name if name.endswith(".py") else "dag.py")
            p.write_text(src, encoding="utf-8", errors="surrogateescape")
            paths[str(p.resolve())] = name
        cmd = [ruff_exe(), "check", "--isolated", "--no-cache", "--select", "AIR", "--output-format", "json",
               "--exit-zero", "--target-version", "py310", tmp]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired as exc:
            raise UserError(f"ruff took longer than {timeout_s:.0f} s on {len(sources)} files") from exc
        if proc.returncode != 0:
            raise UserError(f"ruff failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
        for item in json.loads(proc.stdout or "[]"):
            name = paths.get(str(Path(item.get("filename", "")).resolve()))
            if name is None or not (item.get("code") or "").startswith("AIR"):
                continue  # syntax errors are the parse tier's business
            out[name].append(_to_finding(item, airflow))
    return out


def lint_source(source: str, *, filename: str = "dag.py", airflow: int = 3) -> list[Finding]:
    return lint_sources({filename: source}, airflow=airflow)[filename]
