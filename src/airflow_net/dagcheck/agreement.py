"""How well the static tiers agree with Airflow itself (the airflow tier's DagBag parse) on a corpus.

Verdicts compared: "static" = no error from the parse, static and lint tiers; "airflow" = no error from
the airflow tier. Reported: overall agreement, false alarms (static fails a file that Airflow loads
cleanly) and misses, per mutation kind, per (written for, judged as) cell and per finding code, and
whether each mutation got its own expected code.

Cross-version: with `judge_as="both"` every file is judged under `--airflow 2` and `--airflow 3`, each
against that version's real DagBag, since people run Airflow-2-style files on Airflow 3 (and the reverse).
A file that the DagBag fails only for want of something the ground-truth environment lacks and a deployment
of the file has (a package or provider dagcheck reported as not checked, DC106/DC107; a task decorator or a
connection that such a package or the deployment supplies) says nothing about dagcheck: such rows are
"unchecked", counted apart by reason (unchecked_reason) and left out of the agreement.
"""

from __future__ import annotations

import ast
import logging
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from airflow_net.dagcheck.airflow_tier import AirflowEngine
from airflow_net.dagcheck.corpus import Example
from airflow_net.dagcheck.validate import validate_sources

log = logging.getLogger(__name__)

STATIC_TIERS = ("parse", "static", "lint")


@dataclass
class Row:
    name: str
    airflow: int  # judged as (the target Airflow of both verdicts)
    mutation: str | None
    expected: str | None
    static_ok: bool
    airflow_ok: bool
    static_codes: list[str] = field(default_factory=list)
    airflow_codes: list[str] = field(default_factory=list)
    airflow_message: str = ""
    written_for: int = 0  # the Airflow version the file was written for (0: same as `airflow`)
    unchecked: str = ""  # why this row says nothing about dagcheck (see unchecked_reason); "" when it does

    def __post_init__(self) -> None:
        self.written_for = self.written_for or self.airflow

    @property
    def cell(self) -> str:
        return f"{self.written_for}->{self.airflow}"

    @property
    def agree(self) -> bool:
        return self.static_ok == self.airflow_ok

    @property
    def detected(self) -> bool:
        """The mutation's own code is reported (judged in its own version; across versions the file may
        fail earlier for another reason, which `agree` covers)."""
        return self.expected is None or self.written_for != self.airflow or self.expected in self.static_codes


_MISSING_RE = re.compile(r"No module named '([\w.]+)'|cannot import name '\w+' from '([\w.]+)'")


def _imported_modules(source: str) -> set[str] | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def unchecked_reason(source: str, static_codes: list[str], airflow_message: str) -> str:
    """Why the DagBag's verdict on a file says nothing about dagcheck ("" when it does): it failed only for
    want of something outside the file that the ground-truth environment lacks and that a deployment of the
    file has. These rows are counted apart, by reason, and left out of the agreement."""
    if "task decorator '" in airflow_message and "' not found" in airflow_message:
        # `@task.llm`: registered by the file's package when it is installed (not checked statically)
        return "task decorator of a package missing from the environment"
    if "AirflowNotFoundException: The conn_id" in airflow_message:
        return "reads a connection at parse time (deployment state)"
    m = _MISSING_RE.search(airflow_message)
    if not m or not {"DC106", "DC107"} & set(static_codes):
        return ""
    module = m.group(1) or m.group(2)
    if "DC107" in static_codes and module.startswith("airflow.providers"):
        return "provider outside the index, missing from the environment"
    if "DC106" in static_codes and module.split(".")[0] != "airflow":
        return "package missing from the environment"
    imported = _imported_modules(source)
    if imported is not None and not any(i == module or i.startswith(module + ".") for i in imported):
        # e.g. the file's package imports airflow.sdk under Airflow 2, or a provider that is not installed
        return "fails inside a package dagcheck does not check"
    return ""


def run(examples: list[Example], *, lint: bool = True, timeout_s: float = 30.0, memory_mb: int = 1024,
        judge_as: str = "own") -> tuple[list[Row], dict[str, float]]:
    """Both verdicts for every example; returns the rows and the time each side took (seconds).
    judge_as: "own" judges each file as the version it was written for; "both" as Airflow 2 and 3."""
    if judge_as not in ("own", "both"):
        raise ValueError(f"judge_as must be 'own' or 'both', got {judge_as!r}")
    rows: list[Row] = []
    timing = {"static_s": 0.0, "airflow_s": 0.0, "lint_s": 0.0}
    majors = sorted({e.airflow for e in examples}) if judge_as == "own" else [2, 3]
    for major in majors:
        group = [e for e in examples if judge_as == "both" or e.airflow == major]
        t0 = time.perf_counter()
        reports = validate_sources([(e.name, e.source) for e in group], airflow=major, lint=False)
        timing["static_s"] += time.perf_counter() - t0
        if lint:
            from airflow_net.dagcheck.lint import lint_sources

            t0 = time.perf_counter()
            found = lint_sources({f"{i}.py": e.source for i, e in enumerate(group)}, airflow=major)
            timing["lint_s"] += time.perf_counter() - t0
            for i, rep in enumerate(reports):
                rep.add(found[f"{i}.py"], "lint")
        t0 = time.perf_counter()
        with AirflowEngine(major, timeout_s=timeout_s, memory_mb=memory_mb) as eng:
            for e, rep in zip(group, reports, strict=True):
                res = eng.check_source(e.source, e.name.split("/")[-1].split("#")[0], e.support)
                af = res.findings()
                message = "; ".join(f"{f.code}: {f.message[:160]}" for f in af[:2])
                rows.append(Row(
                    name=e.name, airflow=major, mutation=e.mutation, expected=e.expected,
                    static_ok=rep.tier_ok(STATIC_TIERS), airflow_ok=not any(f.severity == "error" for f in af),
                    static_codes=rep.codes(), airflow_codes=sorted({f.code for f in af}),
                    airflow_message=message, written_for=e.airflow,
                    unchecked=unchecked_reason(e.source, rep.codes(), message)))
        timing["airflow_s"] += time.perf_counter() - t0
    return rows, timing


def metrics(rows: list[Row]) -> dict[str, Any]:
    unchecked = [r for r in rows if r.unchecked]
    rows = [r for r in rows if not r.unchecked]
    clean = [r for r in rows if r.mutation is None]
    clean_loaded = [r for r in clean if r.airflow_ok]
    mutants = [r for r in rows if r.mutation is not None]
    kinds: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "agree": 0, "detected": 0, "airflow_fails": 0})
    cells: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"n": 0, "agree": 0, "false_alarms": [], "misses": [], "false_alarms_on_loaded_examples": 0})
    # Per finding code: files where static reported it and how its verdict fared against the DagBag.
    codes: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "false_alarm": 0, "agree": 0})
    for r in rows:
        k = kinds[f"{r.cell}:{r.mutation or 'unmodified'}"]
        k["n"] += 1
        k["agree"] += r.agree
        k["detected"] += r.detected
        k["airflow_fails"] += not r.airflow_ok
        c = cells[r.cell]
        c["n"] += 1
        c["agree"] += r.agree
        if not r.static_ok and r.airflow_ok:
            c["false_alarms"].append(r.name)
            c["false_alarms_on_loaded_examples"] += r.mutation is None
        if r.static_ok and not r.airflow_ok:
            c["misses"].append(r.name)
        for code in r.static_codes:
            codes[code]["files"] += 1
            codes[code]["agree"] += r.agree
            codes[code]["false_alarm"] += (not r.static_ok) and r.airflow_ok
    for c in cells.values():
        c["agreement"] = c["agree"] / c["n"] if c["n"] else 0.0
    return {
        "files": len(rows),
        "agreement": sum(r.agree for r in rows) / len(rows) if rows else 0.0,
        "false_alarms_on_loaded_examples": sum(not r.static_ok for r in clean_loaded),
        "loaded_examples": len(clean_loaded),
        "examples": len(clean),
        "mutants": len(mutants),
        "mutants_with_expected_code": sum(r.detected for r in mutants),
        "false_alarms": sum((not r.static_ok) and r.airflow_ok for r in rows),
        "misses": sum(r.static_ok and not r.airflow_ok for r in rows),
        "by_kind": dict(sorted(kinds.items())),
        "by_cell": dict(sorted(cells.items())),
        "by_code": dict(sorted(codes.items())),
        "unchecked": len(unchecked),
        "unchecked_by_reason": dict(sorted(Counter(r.unchecked for r in unchecked).items())),
        "min_cell_agreement": min((c["agreement"] for c in cells.values()), default=0.0),
    }


def table(rows: list[Row]) -> str:
    m = metrics(rows)
    out = ["| written for -> judged as | mutation | files | agree | expected code | DagBag fails |",
           "|---|---|---:|---:|---:|---:|"]
    for key, k in m["by_kind"].items():
        cell, kind = key.split(":", 1)
        out.append(f"| {cell} | {kind} | {k['n']} | {k['agree']}/{k['n']} | {k['detected']}/{k['n']} | {k['airflow_fails']} |")
    out += ["", "| written for -> judged as | files | agreement | false alarms | misses |", "|---|---:|---:|---:|---:|"]
    for cell, c in m["by_cell"].items():
        out.append(f"| {cell} | {c['n']} | {c['agreement']:.2%} | {len(c['false_alarms'])} | {len(c['misses'])} |")
    out += ["", "| code | files | verdict agrees | false alarm |", "|---|---:|---:|---:|"]
    for code, c in m["by_code"].items():
        out.append(f"| {code} | {c['files']} | {c['agree']} | {c['false_alarm']} |")
    out.append("")
    for cell, c in m["by_cell"].items():
        for what in ("false_alarms", "misses"):
            if c[what]:
                out.append(f"{cell} {what.replace('_', ' ')}: {', '.join(c[what])}")
    for reason, n in m["unchecked_by_reason"].items():
        out.append(f"unchecked ({reason}): {n}")
    out.append(f"agreement {m['agreement']:.2%} on {m['files']} files ({m['examples']} examples, {m['mutants']} mutants); "
               f"false alarms on the {m['loaded_examples']} examples DagBag loads: {m['false_alarms_on_loaded_examples']}; "
               f"all false alarms {m['false_alarms']}, misses {m['misses']}; "
               f"mutants reported with their own code: {m['mutants_with_expected_code']}/{m['mutants']}")
    return "\n".join(out)
