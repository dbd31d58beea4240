"""The offline describer: plain-language requests for a DAG spec, in three registers.

``terse`` is one or two sentences, ``detailed`` a paragraph, ``business`` a stakeholder's request told as a
story. Every variant names the DAG id, the schedule (in words, sometimes with the cron), every task by its
id with what it does, the TaskGroups and the dependency order, so that a model can rebuild the structure
from the request alone; none contains code. The detailed variant adds operators' key arguments, default_args,
start date, catchup, tags and XCom hand-offs. Tasks inside a TaskGroup are named by their id within the
group, together with the group, which is how one writes them.

The dependency order is first turned into a ``DepPlan`` (stages of parallel tasks, or per-task "after"
lists when the graph is not layered); ``plan_edges`` gives back the exact edges, and the tests hold the two
equal for every DAG.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field

from airflow_net.data.spec import DagSpec, TaskSpec, topological_order

log = logging.getLogger(__name__)

VARIANTS = ("terse", "detailed", "business")
# The fourth style: the canonical request (data/canonical.py), one exact line per spec. Not cycled by
# ``instructions_for`` (it has a single form); ``instruct.canonical`` adds it once per DAG.
CANONICAL = "canonical"
STYLES = (*VARIANTS, CANONICAL)

DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


# ---- dependency plan ------------------------------------------------------------------------------------


@dataclass
class DepPlan:
    """How the tasks depend on each other, in a shape that reads well.

    layered: ``stages`` are lists of task ids that run side by side; ``links[i]`` says how stage i+1 hangs
    off stage i: "full" (each waits for all of the previous stage) or "pairwise" (the j-th waits for the
    j-th). Otherwise ``after`` maps each task to the tasks it waits for (topological order).
    """

    stages: list[list[str]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    after: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def layered(self) -> bool:
        return bool(self.stages)


def _topo(ids: list[str], edges: list[tuple[str, str]]) -> list[str]:
    try:
        return topological_order(ids, edges)
    except ValueError:
        raise ValueError("the spec's edges contain a cycle: a DAG cannot be described") from None


def dependency_plan(spec: DagSpec) -> DepPlan:
    ids = [t.task_id for t in spec.tasks]
    edges = list(dict.fromkeys(spec.edges))
    order = _topo(ids, edges)
    depth = {t: 0 for t in order}
    for u in order:
        for a, b in edges:
            if a == u:
                depth[b] = max(depth[b], depth[u] + 1)
    stages: list[list[str]] = []
    for t in order:
        while len(stages) <= depth[t]:
            stages.append([])
        stages[depth[t]].append(t)
    eset = set(edges)
    links: list[str] = []
    layered = all(depth[b] == depth[a] + 1 for a, b in edges)
    if layered:
        for i in range(1, len(stages)):
            a, b = stages[i - 1], stages[i]
            pairs = {(x, y) for x in a for y in b} & eset
            if len(pairs) == len(a) * len(b):
                links.append("full")
            elif len(a) == len(b) and len(pairs) == len(a) and len({y for _, y in pairs}) == len(b) \
                    and len({x for x, _ in pairs}) == len(a):
                succ = dict(pairs)
                stages[i] = [succ[x] for x in a]
                links.append("pairwise")
            else:
                layered = False
                break
    if layered and (len(stages) > 1 or len(ids) == 1 or not edges):
        if len(stages) == 1 and len(ids) > 1:
            return DepPlan(stages=stages, links=[])  # independent tasks
        return DepPlan(stages=stages, links=links)
    ups = {t: [a for a, b in edges if b == t] for t in order}
    return DepPlan(after=[(t, sorted(ups[t], key=order.index)) for t in order])


def plan_edges(plan: DepPlan) -> set[tuple[str, str]]:
    if plan.layered:
        out = set()
        for i, link in enumerate(plan.links):
            a, b = plan.stages[i], plan.stages[i + 1]
            out |= set(zip(a, b, strict=True)) if link == "pairwise" else {(x, y) for x in a for y in b}
        return out
    return {(u, t) for t, ups in plan.after for u in ups}


# ---- words ----------------------------------------------------------------------------------------------


def _hm(h: int, m: int) -> str:
    return f"{h:02d}:{m:02d}"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def schedule_phrases(schedule: str | None) -> list[str]:
    """Ways to say ``schedule`` in words (a model must be able to write the cron back from any of them)."""
    if schedule is None:
        return ["with no schedule (manual triggers only)", "only when triggered manually (schedule None)",
                "without a schedule, on demand", "unscheduled (manual runs only)"]
    presets = {
        "@once": ["once (the @once preset)", "a single time (@once)"],
        "@hourly": ["hourly", "every hour", "once an hour, on the hour"],
        "@daily": ["daily", "every day at midnight", "once a day at midnight"],
        "@weekly": ["weekly", "once a week (Sunday at midnight)", "every week"],
        "@monthly": ["monthly", "on the first of every month at midnight", "once a month"],
    }
    if schedule in presets:
        return presets[schedule]
    f = schedule.split()
    if len(f) == 5:
        mi, ho, dom, mon, dow = f
        if mi.isdigit() and ho.isdigit() and dom == "*" and mon == "*":
            t = _hm(int(ho), int(mi))
            if dow == "*":
                return [f"every day at {t}", f"daily at {t}", f"each day at {t}"]
            if dow == "1-5":
                return [f"on weekdays at {t}", f"Monday to Friday at {t}", f"every weekday at {t}"]
            if dow.isdigit():
                d = DAYS[int(dow) % 7]
                return [f"every {d} at {t}", f"weekly on {d}s at {t}", f"once a week, {d} at {t}"]
        if mi.isdigit() and ho.isdigit() and dom.isdigit() and mon == "*" and dow == "*":
            t, d = _hm(int(ho), int(mi)), _ordinal(int(dom))
            return [f"on the {d} of every month at {t}", f"monthly on the {d} at {t}"]
        if mi.isdigit() and ho == "*" and dom == mon == dow == "*":
            return [f"every hour at minute {int(mi)}", f"hourly at :{int(mi):02d}"]
        if mi == "0" and ho.startswith("*/") and dom == mon == dow == "*":
            return [f"every {ho[2:]} hours", f"once every {ho[2:]} hours, on the hour"]
        if mi.startswith("*/") and ho == dom == mon == dow == "*":
            return [f"every {mi[2:]} minutes", f"once every {mi[2:]} minutes"]
    return [f"on the cron schedule `{schedule}`"]


def _schedule_words(schedule: str | None, rng: random.Random, cron_p: float) -> str:
    words = rng.choice(schedule_phrases(schedule))
    if schedule and "`" not in words and schedule not in words and rng.random() < cron_p:
        kind = "preset" if schedule.startswith("@") else "cron"
        words += f" (`{schedule}`)" if rng.random() < 0.5 else f", i.e. {kind} `{schedule}`"
    return words


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        h = seconds // 3600
        return "an hour" if h == 1 else f"{h} hours"
    if seconds % 60 == 0:
        m = seconds // 60
        return "a minute" if m == 1 else f"{m} minutes"
    return f"{seconds} seconds"


def _version(spec: DagSpec, rng: random.Random) -> str:
    if spec.airflow == 2:
        return rng.choice(["Airflow 2.10", "Airflow 2", "Airflow 2.x", "Airflow 2.10.x"])
    return rng.choice(["Airflow 3", "Airflow 3", "Airflow 3.x"])


def _style_sentence(spec: DagSpec, rng: random.Random) -> str:
    return rng.choice({
        "taskflow": ["Use the TaskFlow API (@task functions) throughout.", "Write every step as a TaskFlow task.",
                     "Use @task-decorated functions, passing data between them directly."],
        "classic": ["Use classic operators.", "Stick to classic operators, no TaskFlow.",
                    "Build it from regular operator instances."],
        "mixed": ["Mix TaskFlow functions with classic operators.",
                  "Combine @task functions and classic operators.", "Use TaskFlow where it is Python, operators elsewhere."],
    }.get(spec.style, ["Use whatever operators fit."]))


OP_SHORT: dict[str, list[str]] = {
    "BashOperator": ["bash", "BashOperator", "a bash command"],
    "PythonOperator": ["python", "PythonOperator", "a Python callable"],
    "EmptyOperator": ["EmptyOperator", "an empty marker", "no-op"],
    "SQLExecuteQueryOperator": ["SQL", "SQLExecuteQueryOperator", "a SQL statement"],
    "SQLCheckOperator": ["SQL check", "SQLCheckOperator"],
    "FileSensor": ["FileSensor", "file sensor"],
    "TimeDeltaSensor": ["TimeDeltaSensor", "time-delta sensor"],
    "DateTimeSensor": ["DateTimeSensor", "date-time sensor"],
    "ExternalTaskSensor": ["ExternalTaskSensor", "external task sensor"],
    "@task": ["@task", "TaskFlow", "a Python @task"],
    "@task.bash": ["@task.bash", "a TaskFlow bash task"],
}


def _op_short(op: str, rng: random.Random) -> str:
    return rng.choice(OP_SHORT.get(op, [op]))


def _local(t: TaskSpec) -> str:
    return t.task_id.split(".", 1)[1] if t.group and t.task_id.startswith(t.group + ".") else t.task_id


def _summary(t: TaskSpec) -> str:
    """What the task does, as a lower-case verb phrase."""
    s = t.args.get("summary")
    if s:
        return s
    a = t.args
    if t.operator == "BashOperator" or t.operator == "@task.bash":
        return f"run `{a['bash_command']}`" if a.get("bash_command") else "run a shell command"
    if t.operator.startswith("SQL"):
        return "run a SQL check" if "Check" in t.operator else "run a SQL statement"
    if t.operator == "EmptyOperator":
        return "mark a point in the run"
    if "Sensor" in t.operator:
        return "wait for a condition"
    return "run its Python step"


def _op_detail(t: TaskSpec, rng: random.Random) -> str:
    """The operator with its key arguments, in words (detailed variant)."""
    a, op = t.args, t.operator
    if op in ("FileSensor", "TimeDeltaSensor", "DateTimeSensor", "ExternalTaskSensor"):
        what = {
            "FileSensor": lambda: f"a FileSensor on `{a.get('filepath')}`"
            + (f" (connection `{a['fs_conn_id']}`)" if a.get("fs_conn_id") else ""),
            "TimeDeltaSensor": lambda: f"a TimeDeltaSensor with a delta of {_duration(60 * a.get('delta_minutes', 0))}",
            "DateTimeSensor": lambda: f"a DateTimeSensor with target_time `{a.get('target_time')}`",
            "ExternalTaskSensor": lambda: f"an ExternalTaskSensor on the `{a.get('external_dag_id')}` DAG"
            + (f", task `{a['external_task_id']}`" if a.get("external_task_id") else "")
            + (f", allowed states {', '.join(a['allowed_states'])}" if a.get("allowed_states") else ""),
        }[op]()
        if "poke_interval" in a:
            what += rng.choice([
                f", poking every {_duration(a['poke_interval'])} with a {_duration(a['timeout'])} timeout in {a['mode']} mode",
                f" ({a['mode']} mode, poke_interval {a['poke_interval']}s, timeout {a['timeout']}s)",
                f" that checks every {_duration(a['poke_interval'])}, gives up after {_duration(a['timeout'])}"
                f" and runs in {a['mode']} mode",
            ])
        return what
    if op == "BashOperator":
        return rng.choice([f"a BashOperator running `{a['bash_command']}`", "a BashOperator"]) \
            if a.get("bash_command") else "a BashOperator"
    if op == "@task.bash":
        return rng.choice(["a @task.bash function", f"a @task.bash function returning `{a.get('bash_command')}`"])
    if op in ("SQLExecuteQueryOperator", "SQLCheckOperator"):
        base = f"a {op} on the `{a.get('conn_id', 'default')}` connection"
        return base + (f" with `{a['sql']}`" if a.get("sql") and rng.random() < 0.5 else "")
    if op == "PythonOperator":
        return rng.choice(["a PythonOperator", f"a PythonOperator calling `{a.get('python_callable')}`"]) \
            if a.get("python_callable") else "a PythonOperator"
    if op == "@task":
        return rng.choice(["a @task function", "a TaskFlow @task", "a TaskFlow function"])
    if op == "EmptyOperator":
        return "an EmptyOperator"
    return f"a {op}"


def _extras(t: TaskSpec) -> list[str]:
    out = []
    if t.args.get("retries"):
        out.append(f"{t.args['retries']} retries")
    if t.args.get("trigger_rule"):
        out.append(f"trigger rule {t.args['trigger_rule']}")
    return out


def _ids(xs: list[str]) -> str:
    xs = [f"`{x}`" for x in xs]
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


class _Ctx:
    """Per-spec lookups shared by the variants."""

    def __init__(self, spec: DagSpec):
        self.spec = spec
        self.by_id = {t.task_id: t for t in spec.tasks}
        self.local = {t.task_id: _local(t) for t in spec.tasks}
        self.plan = dependency_plan(spec)

    def names(self, tids: list[str]) -> str:
        return _ids([self.local[t] for t in tids])

    def group_sentences(self, rng: random.Random) -> list[str]:
        out = []
        for g in self.spec.groups:
            members = [t.task_id for t in self.spec.tasks if t.group == g]
            out.append(rng.choice([
                f"Put {self.names(members)} in a TaskGroup called `{g}`.",
                f"Group {self.names(members)} under a task group `{g}`.",
                f"{self.names(members)} belong{'s' if len(members) == 1 else ''} in the `{g}` task group.",
                f"Wrap {self.names(members)} in a TaskGroup with group_id `{g}`.",
            ]))
        return out

    def group_clause(self, tid: str) -> str:
        g = self.by_id[tid].group
        return f" (in group `{g}`)" if g else ""


# ---- dependency order in words ----------------------------------------------------------------------------


def _order_words(c: _Ctx, rng: random.Random, *, register: str) -> str:
    """The whole dependency order as one or a few sentences (exact: every edge is said, nothing more)."""
    p = c.plan
    if p.layered:
        if len(p.stages) == 1:
            ts = p.stages[0]
            if len(ts) == 1:
                return ""
            return rng.choice([f"{c.names(ts)} are independent: no dependencies between them.",
                               f"{c.names(ts)} run in parallel with no dependencies."])
        parts = []
        for i, stage in enumerate(p.stages):
            many = len(stage) > 1
            if i == 0:
                parts.append(rng.choice(["first ", "start with ", ""]) + c.names(stage)
                             + (rng.choice([" in parallel", " side by side", ""]) if many else ""))
                continue
            link = p.links[i - 1]
            prev = p.stages[i - 1]
            if link == "pairwise":
                pairs = [f"`{c.local[b]}` after `{c.local[a]}`" for a, b in zip(prev, stage, strict=True)]
                parts.append("then " + ", ".join(pairs[:-1]) + " and " + pairs[-1]
                             + rng.choice([" (one chain per branch)", " respectively", ""]))
            elif many:
                parts.append(rng.choice(["then ", "after that ", "next "]) + c.names(stage)
                             + rng.choice([" in parallel", " at the same time", " side by side"]))
            elif len(prev) > 1:
                parts.append(rng.choice([f"and once {'both' if len(prev) == 2 else 'all of them'} finish, ",
                                         "then, when those are done, ", "then "]) + c.names(stage))
            else:
                parts.append(rng.choice(["then ", "followed by ", "then "]) + c.names(stage))
        body = ", ".join(parts)
        lead = {"terse": ["", "Order: ", "Flow: "], "detailed": ["Order: ", "Dependencies: ", "The order is: "],
                "business": ["In order: ", "The sequence: ", "Order of steps: "]}[register]
        text = rng.choice(lead) + body
        return text[0].upper() + text[1:] + "."
    # not layered: say what each task waits for
    bits = []
    for t, ups in p.after:
        if ups:
            bits.append(rng.choice([f"`{c.local[t]}` runs after {c.names(ups)}",
                                    f"`{c.local[t]}` waits for {c.names(ups)}",
                                    f"{c.names(ups)} must finish before `{c.local[t]}`"]))
    roots = [t for t, ups in p.after if not ups]
    head = f"{c.names(roots)} start{'s' if len(roots) == 1 else ''} the run; "
    return head[0].upper() + head[1:] + "; ".join(bits) + "."


# ---- variants -----------------------------------------------------------------------------------------------


def _terse(c: _Ctx, rng: random.Random) -> str:
    s = c.spec
    sched = _schedule_words(s.schedule, rng, 0.25)
    ver = _version(s, rng) + " " if s.airflow == 2 or rng.random() < 0.7 else ""
    style = {"taskflow": rng.choice(["TaskFlow ", "TaskFlow-style ", ""]), "mixed": "", "classic": ""}[s.style]

    def tag(tid: str) -> str:
        t = c.by_id[tid]
        return f"`{c.local[tid]}`" + (f" ({_op_short(t.operator, rng)})" if rng.random() < 0.6 else "")

    p = c.plan
    if p.layered and len(s.tasks) > 1 and len(p.stages) > 1:
        parts = []
        for i, stage in enumerate(p.stages):
            names = [tag(t) for t in stage]
            joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            if i and p.links[i - 1] == "pairwise":
                pairs = [f"{tag(b)} after `{c.local[a]}`" for a, b in zip(p.stages[i - 1], stage, strict=True)]
                parts.append(", ".join(pairs))
            else:
                parts.append(joined + (" in parallel" if len(stage) > 1 else ""))
        flow = rng.choice([", then ", "; then ", " -> "]).join(parts)
    elif len(s.tasks) == 1:
        flow = "a single task " + tag(s.tasks[0].task_id)
    else:
        flow = ", ".join(tag(t.task_id) for t in s.tasks) + ". " + _order_words(c, rng, register="terse").rstrip(".")
    groups = ""
    if s.groups:
        gs = [f"{c.names([t.task_id for t in s.tasks if t.group == g])} in TaskGroup `{g}`" for g in s.groups]
        groups = rng.choice([" Groups: ", " With ", " Put "]) + "; ".join(gs) + "."
    purpose = s.purpose or "run a pipeline"
    templates = [
        f"{ver}{style}DAG `{s.dag_id}` to {purpose}, running {sched}: {flow}.{groups}",
        f"Write an {ver}{style}DAG `{s.dag_id}` ({sched}) that runs {flow}.{groups}",
        f"Need a {style}DAG called `{s.dag_id}` {sched}{' for ' + ver.strip() if ver else ''}: {flow}.{groups}",
        f"{ver}DAG `{s.dag_id}`, scheduled {sched}, to {purpose}. Tasks: {flow}.{groups}",
        f"Create `{s.dag_id}`, an {ver}{style}DAG that runs {sched}: {flow}.{groups}",
    ]
    text = rng.choice(templates)
    return _tidy(text)


def _detailed(c: _Ctx, rng: random.Random) -> str:
    s = c.spec
    purpose = s.purpose or "run a small pipeline"
    ver = _version(s, rng)
    intro = rng.choice([
        f"Create an {ver} DAG with the id `{s.dag_id}` that will {purpose}.",
        f"I need a DAG for {ver}, `{s.dag_id}`, to {purpose}.",
        f"Please write an {ver} DAG named `{s.dag_id}`. Its job is to {purpose}.",
        f"Build `{s.dag_id}` ({ver}): a DAG to {purpose}.",
        f"Write a DAG file for {ver} defining the DAG `{s.dag_id}`, which should {purpose}.",
    ])
    sents = [intro]
    when = _schedule_words(s.schedule, rng, 0.5)
    catch = rng.choice(["with catchup enabled", "with catchup on"]) if s.catchup else \
        rng.choice(["without catchup", "with catchup disabled", "no catchup"])
    sents.append(rng.choice([
        f"Schedule it {when}, starting {s.start_date}, {catch}.",
        f"It runs {when} from a start date of {s.start_date}, {catch}.",
        f"Start date {s.start_date}; schedule: {when}; {catch}.",
    ]))
    da = []
    if s.owner:
        da.append(f"owner `{s.owner}`")
    if s.retries is not None:
        da.append(f"{s.retries} retr{'y' if s.retries == 1 else 'ies'}")
    if s.retry_delay_minutes:
        da.append(f"a retry delay of {_duration(60 * s.retry_delay_minutes)}")
    if da:
        sents.append(rng.choice(["Default args: ", "In default_args set ", "Use default_args with "])
                     + ", ".join(da) + ".")
    if s.tags:
        sents.append(rng.choice(["Tag it ", "Tags: ", "Add the tags "]) + ", ".join(f"`{t}`" for t in s.tags) + ".")
    if s.description and rng.random() < 0.3:
        sents.append(f"Give it a short description (\"{s.description}\").")
    sents.append(_style_sentence(s, rng))
    if s.airflow == 3 and rng.random() < 0.3:
        sents.append(rng.choice(["Import DAG and the decorators from airflow.sdk.",
                                 "Use the Airflow 3 import paths (airflow.sdk, the standard provider)."]))
    elif s.airflow == 2 and rng.random() < 0.3:
        sents.append(rng.choice(["Use the Airflow 2 import paths (airflow.operators, airflow.decorators).",
                                 "Stick to the Airflow 2.10 import paths."]))
    task_bits = []
    for t in s.tasks:
        tid = c.local[t.task_id]
        op = _op_detail(t, rng)
        summ = _summary(t)
        extra = _extras(t)
        ex = f" ({', '.join(extra)})" if extra else ""
        forms = [f"`{tid}` is {op} that should {summ}{ex}", f"`{tid}`: {summ}, as {op}{ex}"]
        if len(op) < 40:  # a long operator description reads badly before the id
            forms.append(f"{op} `{tid}` to {summ}{ex}")
        task_bits.append(rng.choice(forms))
    if len(task_bits) == 1:
        sents.append(rng.choice(["There is one task: ", "The only task: "]) + task_bits[0] + ".")
    else:
        sents.append(rng.choice(["The tasks: ", "Tasks: ", "It has these tasks: "]) + "; ".join(task_bits) + ".")
    sents += c.group_sentences(rng)
    order = _order_words(c, rng, register="detailed")
    if order:
        sents.append(order)
    hand = []
    for p, q in s.xcom:
        hand.append(rng.choice([f"`{c.local[q]}` takes the result of `{c.local[p]}`",
                                f"`{c.local[p]}` passes its output to `{c.local[q]}`",
                                f"`{c.local[q]}` reads `{c.local[p]}`'s return value from XCom"]))
    if hand:
        sents.append(rng.choice(["Data flow: ", "XCom: ", "Hand-offs: "]) + "; ".join(hand) + ".")
    return _tidy(" ".join(sents))


def _business(c: _Ctx, rng: random.Random) -> str:
    s = c.spec
    team = s.owner or rng.choice(["data", "analytics", "platform"])
    team = team.replace("-", " ")
    purpose = s.purpose or "run our pipeline"
    when = _schedule_words(s.schedule, rng, 0.15)
    opening = rng.choice([
        f"Hi! The {team} team needs to {purpose}, {when}.",
        f"Our {team} team wants a pipeline that will {purpose}. It should run {when}.",
        f"We'd like to {purpose} automatically, {when} - this is for the {team} team.",
        f"Could you set up an Airflow pipeline for us? Goal: {purpose}, {when}.",
        f"Request from the {team} team: we need to {purpose} {when}.",
    ])
    name = rng.choice([f"Please call the DAG `{s.dag_id}`.", f"Name it `{s.dag_id}`.",
                       f"The DAG id should be `{s.dag_id}`.", f"Use `{s.dag_id}` as the DAG id."])
    story: list[str] = []
    p = c.plan
    if p.layered and len(p.stages) > 1:
        for i, stage in enumerate(p.stages):
            steps = [f"{_summary(c.by_id[t])} (`{c.local[t]}`)" for t in stage]
            if i and p.links[i - 1] == "pairwise":
                steps = [f"{_summary(c.by_id[b])} (`{c.local[b]}`, right after `{c.local[a]}`)"
                         for a, b in zip(p.stages[i - 1], stage, strict=True)]
            joined = steps[0] if len(steps) == 1 else "; ".join(steps[:-1]) + "; and " + steps[-1]
            lead = (rng.choice(["First, ", "To begin, ", "Step one: "]) if i == 0 else
                    rng.choice(["Finally, ", "Last, "]) if i == len(p.stages) - 1 else
                    rng.choice(["Then ", "After that, ", "Next, "]))
            par = rng.choice([" These can happen at the same time.", " (in parallel)", " All at once."]) \
                if len(stage) > 1 and (i == 0 or p.links[i - 1] == "full") else ""
            story.append(f"{lead}{joined}.{par}")
    else:
        for t in s.tasks:
            story.append(f"We need to {_summary(t)} (`{c.local[t.task_id]}`).")
        order = _order_words(c, rng, register="business")
        if order:
            story.append(order)
    if any(t.operator in ("FileSensor", "ExternalTaskSensor", "TimeDeltaSensor", "DateTimeSensor")
           for t in s.tasks) and rng.random() < 0.5:
        story.append("The waiting steps should be sensors, so nothing runs before the data is there.")
    closing = []
    closing += c.group_sentences(rng)
    if s.airflow == 2 or rng.random() < 0.6:
        closing.append(rng.choice([f"We run {_version(s, rng)}.", f"Target {_version(s, rng)}.",
                                   f"It has to work on {_version(s, rng)}."]))
    if s.style == "taskflow" and rng.random() < 0.6:
        closing.append(rng.choice(["TaskFlow style is preferred.", "Please use TaskFlow."]))
    if s.retries and rng.random() < 0.6:
        closing.append(f"Failed steps should retry {'once' if s.retries == 1 else f'{s.retries} times'}.")
    order = [opening] + ([name] if rng.random() < 0.5 else []) + story + closing
    if name not in order:
        order.insert(len(order) - len(closing), name)
    return _tidy(" ".join(order))


def _tidy(text: str) -> str:
    """Whitespace and articles, outside `quoted` names and commands only."""
    parts = re.sub(r"\s+", " ", text).strip().split("`")
    for i in range(0, len(parts), 2):
        t = parts[i].replace(" .", ".").replace(" ,", ",")
        t = re.sub(r"\b([Aa])n (DAG|TaskFlow|@task|SQL|Bash|Python|FileSensor|TimeDelta|DateTime|TaskGroup)",
                   r"\1 \2", t)  # "an DAG" (a template with no version) -> "a DAG"
        t = re.sub(r"\b([Aa]) (Airflow|EmptyOperator|ExternalTaskSensor)", r"\1n \2", t)
        parts[i] = t
    return "`".join(parts)


def describe(spec: DagSpec, variant: str, rng: random.Random) -> str:
    """One request for ``spec`` in ``variant`` ("terse", "detailed", "business" or "canonical")."""
    if variant == CANONICAL:
        from airflow_net.data.canonical import format_canonical

        return format_canonical(spec)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}, expected one of {', '.join(STYLES)}")
    c = _Ctx(spec)
    return {"terse": _terse, "detailed": _detailed, "business": _business}[variant](c, rng)


def instructions_for(spec: DagSpec, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` distinct (variant, instruction) pairs, cycling through the variants."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i in range(n):
        variant = VARIANTS[i % len(VARIANTS)]
        text = describe(spec, variant, rng)
        for _ in range(20):  # a rare repeat (tiny DAG, few templates): draw again
            if text not in seen:
                break
            text = describe(spec, variant, rng)
        seen.add(text)
        out.append((variant, text))
    return out
