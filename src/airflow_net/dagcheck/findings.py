"""What the validator says about a file: findings with stable codes, grouped into a per-file report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ERROR = "error"
WARNING = "warning"

# The tiers, in the order they run. A tier is "skipped" when it did not run (a syntax error stops the
# static tier; lint and airflow run only when asked for).
TIERS = ("parse", "static", "lint", "airflow")


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: str
    tier: str
    summary: str  # one line for the codes table (docs/dagcheck.md, `--list-codes`)
    hint: str  # the default fix hint; a finding may give a more specific one


_RULES = [
    Rule("DC001", "syntax-error", ERROR, "parse", "The file is not valid Python.", "Fix the syntax at the reported line."),
    Rule("DC101", "undefined-name", ERROR, "static",
         "A name is used but never imported, defined or built in, or read before the statement that assigns it.",
         "Define or import the name (above its first use), or fix its spelling."),
    Rule("DC102", "missing-import", ERROR, "static",
         "A well-known name (an Airflow class, a standard module) is used without being imported.",
         "Add the import given in the hint."),
    Rule("DC103", "unknown-import", ERROR, "static",
         "An `airflow` module or name that this Airflow version does not have.",
         "Use a path from the Airflow API of the target version."),
    Rule("DC104", "removed-import", ERROR, "static",
         "An import path removed in Airflow 3 (it worked in Airflow 2).", "Import it from the new path in the hint."),
    Rule("DC105", "deprecated-import", WARNING, "static",
         "An import path that the target Airflow still loads (a deprecated path or a compatibility shim); it moved "
         "elsewhere.", "Import it from the new path."),
    Rule("DC106", "missing-package", WARNING, "static",
         "A module that is neither in the standard library nor installed with Airflow and its common providers.",
         "Install the package in the Airflow environment, or avoid the import."),
    Rule("DC107", "unchecked-import", WARNING, "static",
         "An `airflow.providers` module outside what the index covers (a provider it does not index, or a path that "
         "depends on the provider's version): the import was not checked.",
         "Make sure the provider (at a version that has this path) is installed where the DAG runs."),
    Rule("DC201", "unknown-argument", ERROR, "static",
         "An argument that the operator, sensor or DAG does not accept.", "Remove it or use the argument named in the hint."),
    Rule("DC202", "missing-argument", ERROR, "static",
         "A required argument of the operator or sensor is missing.", "Pass the argument."),
    Rule("DC301", "duplicate-task-id", ERROR, "static", "Two tasks in one DAG have the same task id.",
         "Give every task a unique task_id."),
    Rule("DC302", "dependency-cycle", ERROR, "static", "The task dependencies form a cycle.",
         "Remove one of the edges in the cycle."),
    Rule("DC303", "xcom-unknown-task", ERROR, "static",
         "`xcom_pull(task_ids=...)` names a task id that no DAG in the file defines.",
         "Pull from an existing task id (the full id, with the TaskGroup prefix)."),
    Rule("DC304", "task-outside-dag", ERROR, "static",
         "A task is created outside any DAG (no `with DAG`, no @dag, no dag= argument).",
         "Create the task inside `with DAG(...):` or a @dag function, or pass dag=."),
    Rule("DC305", "taskgroup-misuse", ERROR, "static",
         "A TaskGroup is used outside a DAG, or its group_id repeats.", "Create TaskGroups inside a DAG, with unique ids."),
    Rule("DC306", "no-dag", ERROR, "static", "The file defines no DAG.",
         "Define a DAG (`with DAG(...)`), or call the @dag-decorated function at module level."),
    Rule("DC307", "invalid-id", ERROR, "static",
         "A dag_id, task_id or group_id with characters Airflow rejects, or too long.",
         "Use letters, digits, '_', '-' and '.' (no '.' in group ids), at most 250 characters."),
    Rule("DC308", "invalid-dependency", ERROR, "static",
         "A dependency Python or Airflow rejects, such as `[a, b] >> [c, d]` (list >> list) or `chain(2, t)` (a literal).",
         "Use chain() or cross_downstream() for list-to-list dependencies."),
    Rule("DC309", "task-called", ERROR, "static",
         "An operator's task called like a function (`t = BashOperator(...)`, then `t()`): TypeError when "
         "Airflow parses the file.",
         "Use the task itself in the dependencies (`t >> u`); only a @task function is called."),
    Rule("DC401", "invalid-schedule", ERROR, "static",
         "A cron expression or preset that Airflow cannot parse, given as schedule= or to a cron timetable "
         "(CronTriggerTimetable, CronDataIntervalTimetable, CronPartitionTimetable).",
         "Use five cron fields ('0 6 * * *') or a preset (@daily, @hourly, @weekly, @monthly, @once...)."),
    Rule("DC403", "invalid-asset", ERROR, "static",
         "An Asset (Dataset in Airflow 2) whose name or URI Airflow rejects: empty, only whitespace, the reserved "
         "'airflow' scheme, a reserved name ('self', 'context'), too long, or (Airflow 2) not ASCII.",
         "Give the asset a non-empty name or URI, such as Asset('s3://bucket/key') or Asset(name='orders')."),
    Rule("DC402", "unknown-connection", ERROR, "static", "A conn_id outside the declared set of connections.",
         "Use one of the declared connection ids."),
    Rule("DC999", "internal-error", ERROR, "static",
         "dagcheck itself failed on this file (a bug: please report it with the file).",
         "The file could not be checked; treat it as failing."),
    Rule("DC901", "airflow-import-error", ERROR, "airflow", "Airflow's DagBag failed to import the file.",
         "Read the traceback in the message."),
    Rule("DC902", "airflow-timeout", ERROR, "airflow", "Parsing the file took longer than the time limit.",
         "Move slow work from module level into tasks."),
    Rule("DC903", "airflow-memory", ERROR, "airflow", "Parsing the file exceeded the memory limit.",
         "Do not allocate large objects at module level."),
    Rule("DC904", "airflow-sandbox-violation", ERROR, "airflow",
         "The file tried to do something a DAG file must not do while parsed (write files, open sockets, "
         "start processes).", "Move side effects into tasks."),
    Rule("DC905", "airflow-no-dag", ERROR, "airflow", "Airflow imported the file but found no DAG in it.",
         "Define a DAG at module level."),
    Rule("DC906", "airflow-crash", ERROR, "airflow", "The parsing process died (signal or internal error).",
         "Read the message."),
]

RULES: dict[str, Rule] = {r.code: r for r in _RULES}

# The codes that mean "deprecated or moved Airflow API that the target version still loads": DC105 (static
# tier) and ruff's AIR rules for paths that still work in Airflow 3 (AIR311/AIR312 always; AIR301/AIR302 when
# the lint tier found that the flagged path still loads, i.e. when the finding's severity is a warning).
# Count a finding as deprecated-API use when its code is here and its severity is WARNING: an error with one
# of these codes is a path the loader rejects (invalid, not merely deprecated).
DEPRECATION_CODES: frozenset[str] = frozenset({"DC105", "AIR301", "AIR302", "AIR311", "AIR312"})


@dataclass
class Finding:
    code: str
    name: str
    severity: str
    line: int
    col: int
    message: str
    hint: str
    tier: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(**{k: d[k] for k in ("code", "name", "severity", "line", "col", "message", "hint", "tier")})


def make_finding(code: str, line: int, col: int, message: str, hint: str | None = None, *,
                 severity: str | None = None) -> Finding:
    rule = RULES[code]
    return Finding(code=code, name=rule.name, severity=severity or rule.severity, line=int(line or 0),
                   col=int(col or 0), message=message, hint=hint if hint is not None else rule.hint, tier=rule.tier)


@dataclass
class Report:
    filename: str
    airflow: int
    findings: list[Finding] = field(default_factory=list)
    tiers: dict[str, str] = field(default_factory=lambda: dict.fromkeys(TIERS, "skipped"))
    dag_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def deprecated(self) -> bool:
        """The file uses deprecated or moved Airflow API that the target version still loads."""
        return any(f.severity == WARNING and f.code in DEPRECATION_CODES for f in self.findings)

    def codes(self, tier: str | None = None) -> list[str]:
        return sorted({f.code for f in self.findings if tier is None or f.tier == tier})

    def tier_ok(self, tiers: tuple[str, ...] | list[str]) -> bool:
        """Verdict from some tiers only: no error finding from them (used to compare static vs airflow)."""
        return not any(f.severity == ERROR and f.tier in tiers for f in self.findings)

    def add(self, findings: list[Finding], tier: str) -> None:
        """Record one tier's findings and its pass/fail state."""
        self.findings.extend(findings)
        self.tiers[tier] = "fail" if any(f.severity == ERROR for f in findings) else "pass"
        self.findings.sort(key=lambda f: (TIERS.index(f.tier) if f.tier in TIERS else 9, f.line, f.col, f.code))

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "airflow": self.airflow,
            "ok": self.ok,
            "tiers": dict(self.tiers),
            "dag_ids": list(self.dag_ids),
            "findings": [f.to_dict() for f in self.findings],
        }
