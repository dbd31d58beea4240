"""The parse and static tiers: everything that can be said about a DAG file from its AST alone.

Nothing here imports or executes the checked code: the file is parsed with `ast`, names are resolved by
a scope analysis (names.py), and the DAG is rebuilt by an abstract interpreter (interp.py).
"""

from __future__ import annotations

import ast
import functools
import re
import warnings
from dataclasses import dataclass, field

from airflow_net.dagcheck import names as names_mod
from airflow_net.dagcheck.api import ApiIndex, missing_import_hint
from airflow_net.dagcheck.findings import WARNING, Finding, Report, make_finding
from airflow_net.dagcheck.interp import Const, Dag, Interpreter, Ref, Task, import_fallback_choice

# Airflow's cron presets (airflow/utils/dates.py); anything else goes to croniter as Airflow does.
CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
NON_CRON_SCHEDULES = {"@once", "@continuous"}
# DAG arguments that Airflow 3 removed (the generated index holds the full signature; this covers the
# built-in fallback), with what to use instead.
DAG_ARGS_REMOVED_IN_3 = {
    "schedule_interval": "schedule=",
    "timetable": "schedule=",
    "concurrency": "max_active_tasks=",
    "sla_miss_callback": "deadline= (Airflow 3 has no SLAs)",
    "full_filepath": "nothing (drop it)",
}


@dataclass
class Analysis:
    tree: ast.Module
    interp: Interpreter
    findings: list[Finding] = field(default_factory=list)


def parse(source: str, filename: str) -> tuple[ast.Module | None, Finding | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for invalid escapes etc.
            return ast.parse(source, filename=filename), None
    except SyntaxError as exc:
        line = exc.lineno or 0
        text = (exc.text or "").strip()
        msg = f"{exc.msg}" + (f": {text[:80]}" if text else "")
        return None, make_finding("DC001", line, exc.offset or 0, msg)
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        # null bytes, expressions nested too deep for the parser
        return None, make_finding("DC001", 0, 0, f"cannot parse: {type(exc).__name__}: {exc}"[:200])


def _line(node: ast.AST | None) -> tuple[int, int]:
    return getattr(node, "lineno", 0) or 0, getattr(node, "col_offset", 0) or 0


def check_imports(facts: names_mod.NameAnalyzer, airflow: int, index: ApiIndex) -> list[Finding]:
    """Imports against the API index. A failing import inside try/except ImportError is a fallback, not an
    error; imports inside function bodies run when the task runs, often in another environment (a
    virtualenv task), so only module-level ones are held to the Airflow environment's packages."""
    out: list[Finding] = []
    for node, in_function, guarded in facts.imports:
        if guarded:
            continue
        handler = facts.handler_imports.get(id(node))
        if handler is not None:
            choice = import_fallback_choice(handler[0], index, airflow)
            if choice is not None and choice != handler[1] + 1:
                continue  # the fallback of an import that the target Airflow has: it never runs there
        if isinstance(node, ast.ImportFrom):
            if node.level or not node.module:
                continue
            items = [(node.module, a.name) for a in node.names if a.name != "*"]
            if any(a.name == "*" for a in node.names):
                items.append((node.module, None))
        else:
            items = [(a.name, None) for a in node.names]
        for module, name in items:
            st = index.check(module, name, airflow)
            path = f"{module}.{name}" if name else module
            line, col = _line(node)
            what = f"`from {module} import {name}`" if name else f"`import {module}`"
            if st.status == "removed":
                hint = f"Use `{import_stmt(st.new_path)}`" if st.new_path else "It has no direct replacement in Airflow 3"
                out.append(make_finding("DC104", line, col, f"{what}: {st.detail or path} was removed in Airflow 3",
                                        hint))
            elif st.status == "deprecated":
                if st.new_path:
                    msg, hint = f"it moved to {st.new_path}", f"Use `{import_stmt(st.new_path)}`"
                else:
                    msg, hint = "it still loads through a compatibility shim", None
                out.append(make_finding("DC105", line, col, f"{what} is deprecated in Airflow {airflow}; {msg}", hint))
            elif st.status == "uncovered":
                out.append(make_finding("DC107", line, col, f"{what}: not checked ({st.detail})"))
            elif st.status == "unknown-module":
                # The name's home in this version beats a similar module name (`airflow.sdk` in Airflow 2).
                sugg = index.suggest(name, airflow) if name else None
                hint = f"Use `{sugg}`" if sugg else _closest_module_hint(module, airflow, index)
                out.append(make_finding("DC103", line, col, f"{what}: Airflow {airflow} has no module {module!r}", hint))
            elif st.status == "unknown-name":
                sugg = index.suggest(name or "", airflow)
                out.append(make_finding("DC103", line, col, f"{what}: {module!r} has no name {name!r} in "
                                        f"Airflow {airflow}", f"Use `{sugg}`" if sugg else None))
            elif st.status == "missing-package" and not in_function:
                out.append(make_finding("DC106", line, col, f"{what}: {st.detail}"))
    return out


def _closest_module_hint(module: str, airflow: int, index: ApiIndex) -> str | None:
    """A module of this version with the same last part (`...operators.bash`), or a close spelling among
    the modules of the same package; cheap, as it runs for every unknown module."""
    import difflib

    leaf = module.rsplit(".", 1)[-1]
    same_leaf = index.modules_by_leaf(airflow).get(leaf, [])
    if same_leaf:
        best = difflib.get_close_matches(module, same_leaf, n=1, cutoff=0.0)
        return f"Did you mean {best[0]!r}?" if best else None
    parent = module.rsplit(".", 1)[0]
    siblings = [m for m in index.modules(airflow) if m.startswith(parent + ".")][:200]
    close = difflib.get_close_matches(module, siblings, n=1, cutoff=0.75)
    return f"Did you mean {close[0]!r}?" if close else None


def check_names(undefined: list[names_mod.UndefinedName], airflow: int, index: ApiIndex) -> list[Finding]:
    out = []
    seen: set[tuple[str, bool]] = set()
    for u in undefined:
        # One finding per name (and per module-level / function-body kind) keeps reports readable.
        key = (u.name, u.in_function)
        if key in seen:
            continue
        seen.add(key)
        when = "when the task runs" if u.in_function else "when Airflow parses the file"
        if u.before:
            out.append(make_finding("DC101", u.line, u.col, f"name {u.name!r} is used before the statement that "
                                    f"assigns it (NameError {when})",
                                    f"Move this below the line that defines {u.name!r}"))
            continue
        hint = missing_import_hint(u.name, airflow, index)
        if hint:
            out.append(make_finding("DC102", u.line, u.col, f"{u.name!r} is used but not imported "
                                    f"(NameError {when})", f"Add `{hint}`"))
        else:
            out.append(make_finding("DC101", u.line, u.col, f"undefined name {u.name!r} (NameError {when})"))
    return out


def _find_cycle(tasks: list[Task]) -> list[Task] | None:
    """One cycle among the tasks (iterative DFS), as the list of tasks along it."""
    color: dict[int, int] = {}
    for start in tasks:
        if color.get(id(start)):
            continue
        stack: list[tuple[Task, int]] = [(start, 0)]
        path: list[Task] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                color[id(node)] = 1
                path.append(node)
            if i < len(node.downstream):
                stack.append((node, i + 1))
                nxt = node.downstream[i]
                c = color.get(id(nxt), 0)
                if c == 1:
                    return path[path.index(nxt):] + [nxt]
                if c == 0:
                    stack.append((nxt, 0))
            else:
                color[id(node)] = 2
                path.pop()
    return None


XCOM_CALL_RE = re.compile(r"xcom_pull\s*\(")


def _xcom_task_ids(call: ast.Call) -> tuple[list[str], bool] | None:
    """The constant task ids an xcom_pull call names; None when not statically known or another DAG's."""
    if any(k.arg == "dag_id" for k in call.keywords):
        return None
    target = None
    for k in call.keywords:
        if k.arg == "task_ids":
            target = k.value
    if target is None and call.args:
        target = call.args[0]
    if target is None:
        return None
    if isinstance(target, ast.Constant) and isinstance(target.value, str):
        return [target.value], True
    if isinstance(target, (ast.List, ast.Tuple)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in target.elts):
        return [e.value for e in target.elts], True
    return None


def _jinja_xcom_calls(text: str) -> list[ast.Call]:
    """xcom_pull calls inside a templated string (`{{ ti.xcom_pull(task_ids='x') }}`), parsed as Python."""
    calls = []
    for m in XCOM_CALL_RE.finditer(text):
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        if depth:
            continue
        try:
            expr = ast.parse("f(" + text[m.end():j], mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if isinstance(expr, ast.Call):
            calls.append(expr)
    return calls


def check_xcom(facts: names_mod.NameAnalyzer, interp: Interpreter) -> list[Finding]:
    all_tasks = [t for d in interp.dags for t in d.all_tasks()] + [t for t in interp.tasks if t.dag is None]
    if not interp.complete or any(t.task_id is None for t in all_tasks):
        return []  # some task id is not known statically: a pull might name it
    known = {t.task_id for t in all_tasks}
    # Tasks of operators the model does not resolve (a package outside the index) still have their ids:
    # any constant `task_id=` in the file may name one.
    # A literal that is the last part of a grouped task's full id is that task's own `task_id=` (a pull must use
    # the full id, `group.task`), not another task's: Airflow's DagBag reports such a pull (DC303, airflow tier).
    grouped = {k.rsplit(".", 1)[-1] for k in known if k and "." in k}
    known |= {k.value.value for c in facts.calls for k in c.keywords
              if k.arg == "task_id" and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)
              and k.value.value not in grouped}
    out = []
    calls: list[tuple[ast.Call, ast.AST]] = [
        (c, c) for c in facts.calls if isinstance(c.func, ast.Attribute) and c.func.attr == "xcom_pull"]
    for node in facts.xcom_strings:
        calls.extend((c, node) for c in _jinja_xcom_calls(node.value))
    if calls:
        for call, where in calls:
            got = _xcom_task_ids(call)
            if not got:
                continue
            for tid in got[0]:
                if tid not in known:
                    line, col = _line(where)
                    near = [k for k in known if k and k.rsplit(".", 1)[-1] == tid]
                    hint = f"Did you mean {near[0]!r} (the full id, with the TaskGroup prefix)?" if near else None
                    out.append(make_finding("DC303", line, col,
                                            f"xcom_pull(task_ids={tid!r}): no task with this id in the file", hint))
    return out


@functools.lru_cache(maxsize=4096)
def cron_error(schedule: str) -> str | None:
    """Why Airflow would reject this schedule string (None: it accepts it). Same rule as Airflow's CronMixin:
    presets mapped, then croniter must parse it. Cached: a corpus repeats a few schedules."""
    if schedule in NON_CRON_SCHEDULES:
        return None
    from croniter import croniter  # imported here: only files with a string schedule pay for it

    try:
        croniter(CRON_PRESETS.get(schedule, schedule))
    except Exception as exc:  # CroniterBadCronError, CroniterBadDateError, and odd input
        return str(exc) or type(exc).__name__
    return None


def check_schedule(dag: Dag) -> list[Finding]:
    if not dag.schedule_is_str or dag.schedule is None:
        return []
    err = cron_error(dag.schedule)
    if err is None:
        return []
    line, col = _line(dag.schedule_node or dag.node)
    return [make_finding("DC401", line, col, f"schedule {dag.schedule!r} is not a valid cron expression or preset: {err}"[:300])]


# Timetables that take a cron expression: class name -> the keyword of the expression. The same names in
# Airflow 2 (airflow.timetables) and 3 (airflow.sdk); their constructors accept anything, and the DagBag rejects
# the DAG when it validates the timetable (AirflowTimetableInvalid), which is the error reported here.
# MultipleCronTriggerTimetable is left out on purpose: Airflow 3.3.2's DagBag loads it with an invalid cron
# (its validate() checks nothing; measured), so flagging it would be a false alarm against the loader.
CRON_TIMETABLES = {
    "CronTriggerTimetable": "expression",
    "CronDataIntervalTimetable": "expression",
    "CronPartitionTimetable": "cron",
}
ASSET_CLASSES = {"Asset", "Dataset"}


def _airflow_callee(node: ast.Call, interp: Interpreter) -> str | None:
    """The class name a call builds when it comes from an Airflow import (`CronTriggerTimetable(...)`,
    `timetables.trigger.CronTriggerTimetable(...)`); None for anything else, so a user's own class of the
    same name is never judged."""
    func = node.func
    if isinstance(func, ast.Name):
        ref = interp.module_env.get(func.id)
        return ref.name if isinstance(ref, Ref) and ref.is_airflow else None
    if isinstance(func, ast.Attribute):
        base = func.value
        while isinstance(base, ast.Attribute):
            base = base.value
        if isinstance(base, ast.Name):
            ref = interp.module_env.get(base.id)
            if isinstance(ref, Ref) and ref.is_airflow:
                return func.attr
    return None


def _const_str(node: ast.AST, interp: Interpreter) -> str | None:
    """A string literal, or a module-level name bound to one (`CRON = "0 6 * * *"`)."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.Name):
        v = interp.module_env.get(node.id)
        return v.value if isinstance(v, Const) and isinstance(v.value, str) else None
    return None


def check_timetables_and_assets(facts: names_mod.NameAnalyzer, interp: Interpreter, airflow: int) -> list[Finding]:
    """Cron expressions inside timetables (wherever they are built) and asset names/URIs."""
    out: list[Finding] = []
    for node in facts.calls:
        cls = _airflow_callee(node, interp)
        if cls in CRON_TIMETABLES:
            key = CRON_TIMETABLES[cls]
            exprs = list(node.args[:1])
            exprs += [k.value for k in node.keywords if k.arg == key]
            for e in exprs:
                cron = _const_str(e, interp)
                err = cron_error(cron) if cron is not None else None
                if err is not None:
                    line, col = _line(e)
                    out.append(make_finding("DC401", line, col, f"{cls}({cron!r}): not a valid cron expression: "
                                            f"{err}"[:300]))
        elif cls in ASSET_CLASSES:
            msg = _asset_error(node, interp, airflow, cls)
            if msg:
                line, col = _line(node)
                out.append(make_finding("DC403", line, col, f"{cls}(...): {msg}"))
    return out


def _asset_error(node: ast.Call, interp: Interpreter, airflow: int, cls: str) -> str | None:
    """Why Airflow's Asset / Dataset constructor would raise on these literal arguments (None: it would not,
    or they are not literals). Mirrors airflow.sdk.definitions.asset (3) and airflow.datasets (2.10)."""
    kw = {k.arg: k.value for k in node.keywords if k.arg}
    values: dict[str, str | None] = {}
    if airflow >= 3:
        first = node.args[0] if node.args else kw.get("name")
        values["name"] = _const_str(first, interp) if first is not None else None
        values["uri"] = _const_str(kw["uri"], interp) if "uri" in kw else None
        if first is None and "uri" not in kw:
            return None  # Asset() with neither: Airflow says so too, but only literals are judged here
    else:
        first = node.args[0] if node.args else kw.get("uri")
        values["uri"] = _const_str(first, interp) if first is not None else None
    for field_name, v in values.items():
        if v is None:
            continue
        if not v.strip():
            return f"the {field_name} {v!r} is empty or only whitespace"
        if airflow >= 3 and len(v) > 1500:
            return f"the {field_name} is longer than 1500 characters"
        if airflow < 3 and not v.isascii():
            return f"the URI {v!r} is not ASCII"
        scheme = v.partition(":")[0].lower() if "://" in v else ""
        if field_name == "uri" or (airflow >= 3 and "uri" not in kw):
            if scheme == "airflow":
                return f"the URI {v!r} uses the reserved scheme 'airflow'"
        if airflow >= 3 and field_name == "name" and v in ("self", "context"):
            return f"the name {v!r} is reserved"
    return None


def check_conn_ids(facts: names_mod.NameAnalyzer, conn_ids: set[str]) -> list[Finding]:
    out = []
    for node in facts.calls:
        for k in node.keywords:
            if k.arg and k.arg.endswith("conn_id") and isinstance(k.value, ast.Constant) and \
                    isinstance(k.value.value, str) and k.value.value not in conn_ids:
                line, col = _line(k.value)
                out.append(make_finding("DC402", line, col, f"{k.arg}={k.value.value!r} is not a declared "
                                        "connection", f"Use one of: {', '.join(sorted(conn_ids)) or '(none declared)'}"))
    return out


def _dag_arg_findings(interp: Interpreter, facts: names_mod.NameAnalyzer, airflow: int, index: ApiIndex) -> list[Finding]:
    """DAG(...) / @dag(...) arguments that the target Airflow does not accept."""
    out = []
    info = index.class_info("airflow.sdk.DAG" if airflow >= 3 else "airflow.models.dag.DAG", airflow)
    params = set(info["params"]) if info else None
    for node in facts.calls:
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name not in ("DAG", "dag"):
            continue
        resolved = interp.module_env.get(name) if isinstance(node.func, ast.Name) else None
        if isinstance(node.func, ast.Name) and not (isinstance(resolved, Ref) and resolved.is_airflow):
            continue
        for k in node.keywords:
            if k.arg is None:
                continue
            bad = (params is not None and k.arg not in params) or (
                params is None and airflow >= 3 and k.arg in DAG_ARGS_REMOVED_IN_3)
            if bad:
                line, col = _line(k)
                repl = DAG_ARGS_REMOVED_IN_3.get(k.arg)
                hint = f"Use {repl}" if repl and airflow >= 3 else None
                out.append(make_finding("DC201", line, col, f"{name}() got an argument it does not accept in "
                                        f"Airflow {airflow}: {k.arg}=", hint))
    return out


def import_stmt(path: str) -> str:
    """"airflow.sdk.DAG" -> "from airflow.sdk import DAG" (a module path stays `import x.y`)."""
    if not path or " " in path or "(" in path:
        return path
    mod, _, name = path.rpartition(".")
    return f"from {mod} import {name}" if mod and name[:1].isalpha() and mod.startswith("airflow") else path


def analyze(tree: ast.Module, airflow: int = 3, index: ApiIndex | None = None) -> Interpreter:
    interp = Interpreter(airflow=airflow, index=index or ApiIndex.load())
    interp.run(tree)
    return interp


def static_findings(tree: ast.Module, *, airflow: int = 3, conn_ids: set[str] | None = None,
                    index: ApiIndex | None = None, interp: Interpreter | None = None) -> tuple[list[Finding], Interpreter]:
    index = index or ApiIndex.load()
    out: list[Finding] = []
    undefined, facts = names_mod.scan(tree)
    out += check_names(undefined, airflow, index)
    out += check_imports(facts, airflow, index)
    interp = interp or analyze(tree, airflow, index)
    # A NameError at parse time stops the file there: do not pile up what would follow from it
    # (tasks without their DAG, no DAG at all).
    name_error = any(f.code in ("DC101", "DC102") and "when Airflow parses" in f.message for f in out)
    for issue in interp.issues:
        line, col = _line(issue.node)
        out.append(make_finding(issue.code, line, col, issue.message, issue.hint))
    out += _dag_arg_findings(interp, facts, airflow, index)
    from airflow_net.dagcheck.args import check_operator_args  # local: keeps the module graph simple

    out += check_operator_args(interp, airflow, index)
    registered = [d for d in interp.dags if d.registered]
    for dag in interp.dags:
        cycle = _find_cycle(dag.all_tasks())
        if cycle:
            ids = " >> ".join(str(t.task_id) for t in cycle)
            line, col = _line(cycle[-2].node if len(cycle) > 1 else cycle[0].node)
            out.append(make_finding("DC302", line, col, f"DAG {dag.dag_id!r} has a dependency cycle: {ids}"))
        out += check_schedule(dag)
    for task in interp.tasks:
        # an operator of a package outside the index given a `dag=` we cannot resolve may well be in one
        opaque_dag = isinstance(task.op_ref, Ref) and not task.op_ref.is_airflow and "dag" in task.kwargs
        if task.dag is None and not name_error and not opaque_dag:
            line, col = _line(task.node)
            out.append(make_finding("DC304", line, col, f"task {task.task_id!r} ({task.operator}) is created outside "
                                    "any DAG and never linked to one"))
    if not registered and interp.complete and not name_error:
        uncalled = [f.node.name for f in interp.dag_funcs if id(f) not in interp.called_dag_funcs]
        msg = "no DAG is defined at module level"
        hint = None
        if uncalled:
            msg = f"the @dag function {uncalled[0]!r} is never called, so no DAG is created"
            hint = f"Call it at module level: `{uncalled[0]}()`"
        elif interp.dags:
            msg = "a DAG object is created but neither used in `with` nor kept in a module-level variable"
            hint = "Use `with DAG(...) as dag:` or assign the DAG to a module-level name"
        out.append(make_finding("DC306", 1, 0, msg, hint))
    out += check_timetables_and_assets(facts, interp, airflow)
    out += check_xcom(facts, interp)
    if conn_ids is not None:
        out += check_conn_ids(facts, conn_ids)
    return out, interp


def check_tree(tree: ast.Module, report: Report, *, airflow: int, conn_ids: set[str] | None) -> Interpreter:
    findings, interp = static_findings(tree, airflow=airflow, conn_ids=conn_ids)
    report.add(findings, "static")
    report.dag_ids = [d.dag_id or "?" for d in interp.dags if d.registered]
    return interp


__all__ = ["Analysis", "WARNING", "analyze", "check_tree", "parse", "static_findings"]
