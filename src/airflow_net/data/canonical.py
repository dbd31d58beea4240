"""The canonical request: one line in a fixed grammar that carries a DagSpec's structural facts.

    dag orders_sync | schedule */15 * * * * | wait_for_orders[S3KeySensor] >> load_orders[Bash] >> refresh_view[@task]

Grammar (whitespace around the separators is exactly one space; the writer never varies it)::

    request  := "dag " DAG_ID " | schedule " SCHEDULE " | " chains
    SCHEDULE := a cron string (5 fields) | a preset ("@daily") | "none"
    chains   := chain ( " ; " chain )*
    chain    := mention ( " >> " mention )*
    mention  := TASK_ID [ "[" OPERATOR "]" ]          # the operator at the task's first mention only
    TASK_ID  := name | group "." name                 # a TaskGroup member is written with its group

Operators ending in ``Operator`` drop that suffix (``BashOperator`` -> ``Bash``): the model writes fewer
tokens, and the parser adds it back to any name that is not a sensor or a ``@task`` decorator. Every edge
appears exactly once in some chain; a task without edges is a chain of one. TaskGroups are the prefixes of
the grouped task ids. What the grammar does not carry (start date, arguments, owner, retries, XCom) is filled
with safe defaults by ``canonical_to_dag_source``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_net.data.spec import DagSpec, TaskSpec, topological_order

NONE_SCHEDULE = "none"
_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_TASK_RE = re.compile(rf"{_ID}(?:\.{_ID})?")
_DAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_OP_RE = re.compile(r"@?[A-Za-z_][A-Za-z0-9_.]*")
_CRON_FIELD = re.compile(r"[0-9*/,\-A-Za-z?LW#]+")


class CanonicalError(ValueError):
    """A canonical request that does not follow the grammar; says where and what was expected."""

    def __init__(self, text: str, pos: int, expected: str):
        got = text[pos:pos + 20] or "the end of the text"
        super().__init__(f"canonical request, position {pos}: expected {expected}, got {got!r}")
        self.pos = pos
        self.expected = expected


@dataclass
class Canonical:
    """The facts a canonical request carries, in the order it mentions them."""

    dag_id: str
    schedule: str | None
    tasks: dict[str, str]  # full task id -> operator (full class name or decorator)
    edges: list[tuple[str, str]]

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(t.split(".", 1)[0] for t in self.tasks if "." in t))


def short_operator(op: str) -> str:
    if op.endswith("Operator") and len(op) > len("Operator") and not op.startswith("@"):
        short = op[: -len("Operator")]
        if not short.endswith("Sensor"):
            return short
    return op


def full_operator(name: str) -> str:
    if name.startswith("@") or name.endswith("Sensor") or name.endswith("Operator"):
        return name
    return name + "Operator"


def _topo(ids: list[str], edges: list[tuple[str, str]]) -> list[str]:
    try:
        return topological_order(ids, edges)
    except ValueError:
        raise ValueError("the spec's edges contain a cycle: it has no canonical request") from None


def chains(task_ids: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Cover every edge exactly once with chains walked in topological order; lone tasks are chains of one."""
    edges = list(dict.fromkeys(edges))
    order = _topo(task_ids, edges)
    rank = {t: i for i, t in enumerate(order)}
    left = sorted(edges, key=lambda e: (rank[e[0]], rank[e[1]]))
    out: list[list[str]] = []
    while left:
        a, b = left.pop(0)
        chain = [a, b]
        while True:
            nxt = next((e for e in left if e[0] == chain[-1]), None)
            if nxt is None:
                break
            left.remove(nxt)
            chain.append(nxt[1])
        out.append(chain)
    touched = {t for e in edges for t in e}
    lone = [[t] for t in order if t not in touched]
    # lone tasks go where they rank, so the request reads in execution order
    merged = sorted(out + lone, key=lambda c: rank[c[0]])
    return merged


def format_canonical(spec: DagSpec) -> str:
    """The canonical request of ``spec``."""
    ops = {t.task_id: t.operator for t in spec.tasks}
    seen: set[str] = set()
    parts = []
    for chain in chains([t.task_id for t in spec.tasks], list(spec.edges)):
        ms = []
        for t in chain:
            ms.append(t if t in seen else f"{t}[{short_operator(ops[t])}]")
            seen.add(t)
        parts.append(" >> ".join(ms))
    sched = NONE_SCHEDULE if spec.schedule is None else " ".join(spec.schedule.split())
    return f"dag {spec.dag_id} | schedule {sched} | " + " ; ".join(parts)


def _expect(text: str, pos: int, literal: str, what: str | None = None) -> int:
    if not text.startswith(literal, pos):
        raise CanonicalError(text, pos, what or repr(literal))
    return pos + len(literal)


def _match(rx: re.Pattern, text: str, pos: int, what: str) -> tuple[str, int]:
    m = rx.match(text, pos)
    if not m:
        raise CanonicalError(text, pos, what)
    return m.group(0), m.end()


def parse_canonical(text: str) -> Canonical:
    """The facts of a canonical request; ``CanonicalError`` names the position and what was expected."""
    text = text.strip()
    pos = _expect(text, 0, "dag ")
    dag_id, pos = _match(_DAG_RE, text, pos, "a dag id (letters, digits, _ . -)")
    pos = _expect(text, pos, " | schedule ")
    end = text.find(" | ", pos)
    if end < 0:
        raise CanonicalError(text, pos, "a schedule followed by ' | ' and the tasks")
    raw = text[pos:end]
    if raw == NONE_SCHEDULE:
        schedule = None
    elif raw.startswith("@") and re.fullmatch(r"@[a-z_]+", raw):
        schedule = raw
    else:
        fields = raw.split(" ")
        if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
            raise CanonicalError(text, pos, "a schedule: 5 cron fields, a preset like @daily, or 'none'")
        schedule = raw
    pos = end + 3
    tasks: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    while True:
        prev = None
        while True:
            start = pos
            tid, pos = _match(_TASK_RE, text, pos, "a task id (name or group.name)")
            if text.startswith("[", pos):
                op, p2 = _match(_OP_RE, text, pos + 1, "an operator name inside [ ]")
                pos = _expect(text, p2, "]")
                if tid in tasks:
                    raise CanonicalError(text, pos - len(op) - 2, f"no operator: {tid} was already given one")
                tasks[tid] = full_operator(op)
            elif tid not in tasks:
                raise CanonicalError(text, start, f"[Operator] at the first mention of {tid}")
            if prev is not None:
                if (prev, tid) in edges:
                    raise CanonicalError(text, pos, f"a new dependency ({prev} >> {tid} is already given)")
                edges.append((prev, tid))
            prev = tid
            if text.startswith(" >> ", pos):
                pos += 4
                continue
            break
        if pos == len(text):
            break
        pos = _expect(text, pos, " ; ", "' >> ', ' ; ' or the end of the request")
    try:
        _topo(list(tasks), edges)
    except ValueError:
        raise CanonicalError(text, len(text), "dependencies without a cycle") from None
    return Canonical(dag_id=dag_id, schedule=schedule, tasks=tasks, edges=edges)


# ---- to code ------------------------------------------------------------------------------------------------

def _default_args(tid: str, local: str, op: str) -> dict:
    """Arguments the renderer needs for ``op``, chosen to pass the validator whatever the task is."""
    summary = local.replace("_", " ")
    a: dict = {"summary": summary}
    if op == "BashOperator":
        a["bash_command"] = f"echo {local}"
    elif op == "PythonOperator":
        a["python_callable"] = local
        a["body"] = f'print("{summary}")'
    elif op == "@task":
        a["params"] = []
        a["body"] = f'print("{summary}")'
    elif op == "@task.bash":
        a["bash_command"] = f"echo {local}"
    elif op in ("SQLExecuteQueryOperator", "SQLCheckOperator"):
        a["conn_id"] = "warehouse"
        a["sql"] = "SELECT 1"
    elif op == "FileSensor":
        a["filepath"] = f"/data/incoming/{local}"
    elif op == "TimeDeltaSensor":
        a["delta_minutes"] = 15
    elif op == "DateTimeSensor":
        a["target_time"] = "{{ data_interval_end }}"
    elif op == "ExternalTaskSensor":
        a["external_dag_id"] = "upstream_dag"
    if op.endswith("Sensor"):
        a.update({"poke_interval": 300, "timeout": 3600, "mode": "reschedule"})
    return a


def canonical_to_spec(text_or_canonical: str | Canonical, *, airflow: int = 3,
                      start_date: str = "2024-01-01") -> DagSpec:
    """A full DagSpec from a canonical request, with safe defaults for what the grammar does not carry."""
    from airflow_net.data.factory import DECORATORS, OPERATOR_MODULES

    c = parse_canonical(text_or_canonical) if isinstance(text_or_canonical, str) else text_or_canonical
    if airflow not in OPERATOR_MODULES:
        raise ValueError(f"airflow must be one of {sorted(OPERATOR_MODULES)}, got {airflow!r}")
    tasks = []
    for tid, op in c.tasks.items():
        if op not in DECORATORS and op not in OPERATOR_MODULES[airflow]:
            known = sorted(set(OPERATOR_MODULES[airflow]) | set(DECORATORS))
            raise ValueError(f"operator {op} of task {tid} cannot be rendered; expected one of {known}")
        group, local = tid.split(".", 1) if "." in tid else (None, tid)
        tasks.append(TaskSpec(task_id=tid, operator=op, args=_default_args(tid, local, op), group=group))
    n_tf = sum(t.operator in DECORATORS for t in tasks)
    style = "taskflow" if n_tf == len(tasks) else "classic" if n_tf == 0 else "mixed"
    return DagSpec(dag_id=c.dag_id, schedule=c.schedule, start_date=start_date, tasks=tasks,
                   edges=list(c.edges), groups=c.groups, airflow=airflow, style=style)


def canonical_to_dag_source(text_or_spec: str | Canonical | DagSpec, airflow: int = 3) -> str:
    """DAG code for a canonical request (or for a spec's canonical facts), by the corpus factory's renderer."""
    from airflow_net.data.factory import render

    if isinstance(text_or_spec, DagSpec):
        text_or_spec = format_canonical(text_or_spec)
    return render(canonical_to_spec(text_or_spec, airflow=airflow))
