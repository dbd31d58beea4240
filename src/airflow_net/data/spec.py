"""The structured description of a DAG: what the factory generates, what a request asks for, and what
the validator reads back from generated code, so that the three can be compared exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# How a TaskFlow task appears in a spec or a structure: the decorator, e.g. "@task", "@task.bash".
TASKFLOW_PREFIX = "@"


@dataclass(frozen=True)
class TaskSpec:
    task_id: str  # the full id Airflow gives it: "group.task" inside a TaskGroup
    operator: str  # class name as imported ("BashOperator", "S3KeySensor") or a decorator ("@task")
    args: dict[str, Any] = field(default_factory=dict)  # key arguments, JSON-able (bash_command, conn_id, ...)
    group: str | None = None  # the TaskGroup's group_id, if any


@dataclass
class DagSpec:
    dag_id: str
    schedule: str | None  # a cron string, a preset ("@daily") or None
    start_date: str  # ISO date, e.g. "2024-01-01"
    tasks: list[TaskSpec]
    edges: list[tuple[str, str]]  # (upstream, downstream), full task ids
    catchup: bool = False
    tags: list[str] = field(default_factory=list)
    owner: str | None = None
    retries: int | None = None
    retry_delay_minutes: int | None = None
    description: str | None = None
    groups: list[str] = field(default_factory=list)
    xcom: list[tuple[str, str]] = field(default_factory=list)  # (producer, consumer) task ids
    airflow: int = 3  # 3: `airflow.sdk` imports; 2: Airflow 2 import paths
    style: str = "classic"  # classic | taskflow | mixed
    purpose: str = ""  # a short phrase the describer can use: "ingest daily sales from S3"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["edges"] = [list(e) for e in self.edges]
        d["xcom"] = [list(e) for e in self.xcom]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DagSpec:
        d = dict(d)
        d["tasks"] = [TaskSpec(**t) for t in d.get("tasks", [])]
        d["edges"] = [tuple(e) for e in d.get("edges", [])]
        d["xcom"] = [tuple(e) for e in d.get("xcom", [])]
        return cls(**d)

    def structure(self) -> DagStructure:
        return DagStructure(
            dag_id=self.dag_id,
            schedule=self.schedule,
            tasks={t.task_id: t.operator for t in self.tasks},
            edges=set(self.edges),
        )


@dataclass
class DagStructure:
    """What can be compared between a request and a generated DAG."""

    dag_id: str | None
    schedule: str | None
    tasks: dict[str, str]  # task id -> operator / decorator
    edges: set[tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "schedule": self.schedule,
            "tasks": dict(sorted(self.tasks.items())),
            "edges": sorted([list(e) for e in self.edges]),
        }


def normalize_schedule(s: str | None) -> str | None:
    """Compare schedules by meaning where it is cheap: presets and their cron equivalents, spacing."""
    if s is None:
        return None
    s = " ".join(str(s).split())
    presets = {
        "@hourly": "0 * * * *",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *",
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
    }
    return presets.get(s, s)


def topological_order(ids: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Task ids in dependency order, ties broken by their order in ``ids``; ValueError on a cycle."""
    pos = {t: i for i, t in enumerate(ids)}
    indeg = dict.fromkeys(ids, 0)
    for _, b in edges:
        indeg[b] += 1
    ready = sorted((t for t in ids if indeg[t] == 0), key=pos.get)
    out: list[str] = []
    while ready:
        u = ready.pop(0)
        out.append(u)
        for a, b in edges:
            if a == u:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
                    ready.sort(key=pos.get)
    if len(out) != len(ids):
        raise ValueError("the spec's edges contain a cycle")
    return out
