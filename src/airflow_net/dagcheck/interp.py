"""A small abstract interpreter of DAG files: it follows the module's statements the way Python would run
them, but only models what Airflow cares about (DAGs, TaskGroups, tasks, dependencies, XCom arguments)
and never executes anything. Values it cannot know are `None` ("unknown") and are carried along quietly.

What it models, following Airflow's own rules:
- `with DAG(...)`, `dag = DAG(...)` + `dag=dag`, `@dag` functions (the DAG exists once the function is called);
- operators (classes imported from airflow, or local subclasses of BaseOperator), `.partial().expand()`;
- TaskFlow (`@task`, `@task.bash`, ... `.override(task_id=...)`, `.expand()`), which gives calls repeated in
  one DAG unique ids (`t`, `t__1`, ...) the way `get_unique_task_id` does;
- TaskGroups (`with TaskGroup("g")`, `@task_group`), which prefix their tasks' ids (`g.t`) and expand to their
  roots / leaves in dependencies, computed when the dependency is set, as Airflow does;
- dependencies: `>>`, `<<`, lists, chained expressions, `set_upstream/set_downstream`, `chain`,
  `chain_linear`, `cross_downstream`, `Label`, and data passing between tasks (XComArgs as arguments);
- loops over known lists and ranges (unrolled), helper functions (inlined), `if` with a known condition.
A budget on interpreted steps keeps adversarial inputs (huge loops, deep recursion) fast.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

# Names (last component of an imported path) that mean the same thing in Airflow 2 and 3.
DAG_CLASSES = {"DAG"}
TASKGROUP_CLASSES = {"TaskGroup"}
CHAIN_FUNCS = {"chain", "chain_linear", "cross_downstream"}
OPERATOR_BASES = {"BaseOperator", "BaseSensorOperator", "DecoratedOperator", "BaseBranchOperator",
                  "SkipMixin", "PythonOperator", "BashOperator", "EmptyOperator"}
MAX_LOOP = 100  # iterations unrolled per loop
MAX_STEPS = 20000  # statements + calls interpreted per file
MAX_DEPTH = 12  # nested calls of local functions
KEY_RE = re.compile(r"^[\w.-]+$")
GROUP_KEY_RE = re.compile(r"^[\w-]+$")
MAX_KEY_LEN = 250


class Budget(Exception):
    """The interpretation budget ran out: the model may be incomplete."""


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


# -- values ------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Const:
    value: Any


@dataclass(eq=False)
class Seq:
    items: list[Any]
    complete: bool = True  # False when some items could not be known (a starred unknown, a loop append)


@dataclass(eq=False)
class DictV:
    items: dict[Any, Any]
    complete: bool = True


@dataclass(eq=False)
class Ref:
    """Something imported: a module or a name inside one, by its dotted path."""

    path: str

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def is_airflow(self) -> bool:
        return self.path == "airflow" or self.path.startswith("airflow.")


@dataclass(eq=False)
class LocalClass:
    name: str
    is_operator: bool


@dataclass(eq=False)
class Func:
    node: ast.FunctionDef | ast.AsyncFunctionDef
    env: Env
    kind: str  # plain | task | task_group | dag
    decorator: str = ""  # "@task", "@task.bash", ...
    deco_kwargs: dict[str, Any] = field(default_factory=dict)
    override: dict[str, Any] = field(default_factory=dict)
    is_setup: bool = False
    is_teardown: bool = False
    deco_call: ast.Call | None = None


@dataclass(eq=False)
class Dag:
    dag_id: str | None
    node: ast.AST
    schedule: str | None = None
    schedule_node: ast.AST | None = None
    schedule_is_str: bool = False
    default_args: Any = None
    has_default_args: bool = False
    tasks: dict[str, Task] = field(default_factory=dict)  # full id -> task
    unknown_tasks: list[Task] = field(default_factory=list)  # tasks whose id is not known statically
    group_ids: set[str] = field(default_factory=set)
    registered: bool = False  # found by DagBag: created in a `with`/@dag call, or a module global

    def all_tasks(self) -> list[Task]:
        return [*self.tasks.values(), *self.unknown_tasks]


@dataclass(eq=False)
class Group:
    group_id: str | None  # full id (parent prefixes included), None for unknown
    dag: Dag | None
    parent: Group | None
    prefix_group_id: bool = True
    children: list[Any] = field(default_factory=list)  # Task | Group
    node: ast.AST | None = None
    branch: tuple = ()  # see Interpreter._exec_branches

    def tasks(self) -> list[Task]:
        out: list[Task] = []
        for c in self.children:
            out.extend(c.tasks() if isinstance(c, Group) else [c])
        return out


@dataclass(eq=False)
class Task:
    task_id: str | None  # the full id (with group prefixes); None when not statically known
    operator: str
    node: ast.AST
    dag: Dag | None = None
    group: Group | None = None
    branch: tuple = ()
    upstream: list[Task] = field(default_factory=list)
    downstream: list[Task] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    is_setup: bool = False
    is_teardown: bool = False
    op_ref: Any = None  # the Ref / LocalClass it was made from (None for TaskFlow)
    call: ast.Call | None = None
    kwargs_complete: bool = True  # False when **kwargs or *args could not be read


@dataclass(eq=False)
class XArg:
    task: Task


@dataclass(eq=False)
class LabelV:
    ups: list[Task] = field(default_factory=list)


@dataclass(eq=False)
class Partial:
    cls: Any  # Ref | LocalClass
    kwargs: dict[str, Any]
    node: ast.Call


@dataclass(eq=False)
class Method:
    obj: Any
    name: str


@dataclass(eq=False)
class Builtin:
    name: str


class Env:
    __slots__ = ("vars", "parent")

    def __init__(self, parent: Env | None = None) -> None:
        self.vars: dict[str, Any] = {}
        self.parent = parent

    def get(self, name: str) -> Any:
        env: Env | None = self
        while env is not None:
            if name in env.vars:
                return env.vars[name]
            env = env.parent
        return None

    def has(self, name: str) -> bool:
        env: Env | None = self
        while env is not None:
            if name in env.vars:
                return True
            env = env.parent
        return False


def import_fallback_choice(node: ast.Try, index: Any, airflow: int) -> int | None:
    """`try: from airflow.sdk import dag` / `except ImportError: from airflow.decorators import dag`: which
    block the target Airflow runs (0: the body, i: the i-th handler), decided by the API index, when every
    block is Airflow imports and every handler catches ImportError; None when that cannot be decided."""
    if index is None or not node.handlers:
        return None
    for h in node.handlers:
        names = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
        if not all(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception")
                   for n in names):
            return None
    for i, block in enumerate([node.body + node.orelse, *[h.body for h in node.handlers]]):
        verdicts = []
        for st in block:
            if isinstance(st, ast.Pass):
                continue
            if not isinstance(st, ast.ImportFrom) or st.level or not (
                    st.module == "airflow" or (st.module or "").startswith("airflow.")):
                return None
            verdicts += [index.check(st.module, a.name, airflow).status for a in st.names]
        if any(v not in ("ok", "deprecated", "unknown-module", "unknown-name", "removed") for v in verdicts):
            return None  # a path the index does not cover: either block may run
        if all(v in ("ok", "deprecated") for v in verdicts):
            return i
    return None


BUILTIN_FUNCS = {"range", "len", "enumerate", "zip", "str", "list", "tuple", "reversed", "sorted", "dict"}


@dataclass
class Issue:
    """Something the interpreter saw that Airflow would reject while building the DAG."""

    code: str
    node: ast.AST | None
    message: str
    hint: str | None = None


def _const(v: Any) -> Any:
    return v.value if isinstance(v, Const) else None


def _str(v: Any) -> str | None:
    return v.value if isinstance(v, Const) and isinstance(v.value, str) else None


def _flatten_xargs(v: Any, out: list[Task], depth: int = 0) -> None:
    if depth > 5:
        return
    if isinstance(v, XArg):
        out.append(v.task)
    elif isinstance(v, Seq):
        for i in v.items:
            _flatten_xargs(i, out, depth + 1)
    elif isinstance(v, DictV):
        for i in v.items.values():
            _flatten_xargs(i, out, depth + 1)


class Interpreter:
    def __init__(self, airflow: int = 3, index: Any = None) -> None:
        self.airflow = airflow
        self.index = index  # ApiIndex: which imported classes are operators
        self.module_env = Env()
        self.dags: list[Dag] = []
        self.tasks: list[Task] = []
        self.groups: list[Group] = []
        self.issues: list[Issue] = []
        self.dag_stack: list[Dag] = []
        self.group_stack: list[Group] = []
        self.branch: tuple = ()
        self.steps = 0
        self.depth = 0
        self.complete = True  # False when the budget ran out or something was too dynamic to follow
        self.dag_funcs: list[Func] = []
        self.called_dag_funcs: set[int] = set()

    # -- entry -----------------------------------------------------------------------------------------------
    def run(self, tree: ast.Module) -> None:
        try:
            self.exec_block(tree.body, self.module_env)
        except Budget:
            self.complete = False
        except _Return:
            pass
        except RecursionError:
            self.complete = False
        # DagBag finds DAGs in module globals too (a DAG built without `with`).
        for v in self.module_env.vars.values():
            if isinstance(v, Dag):
                v.registered = True

    def _tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise Budget()

    # -- statements ------------------------------------------------------------------------------------------
    def exec_block(self, stmts: list[ast.stmt], env: Env) -> None:
        for stmt in stmts:
            self.exec_stmt(stmt, env)

    def exec_stmt(self, node: ast.stmt, env: Env) -> None:
        self._tick()
        if isinstance(node, ast.Expr):
            self.ev(node.value, env)
        elif isinstance(node, ast.Assign):
            value = self.ev(node.value, env)
            for target in node.targets:
                self.assign(target, value, env)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.assign(node.target, self.ev(node.value, env), env)
        elif isinstance(node, ast.AugAssign):
            self.exec_augassign(node, env)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            self.exec_import(node, env)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            env.vars[node.name] = self.make_func(node, env)
        elif isinstance(node, ast.ClassDef):
            bases = [self.ev(b, env) for b in node.bases]
            is_op = any(self._is_operator_class(b) for b in bases)
            env.vars[node.name] = LocalClass(node.name, is_op)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            self.exec_with(node, env)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.exec_for(node, env)
        elif isinstance(node, ast.While):
            # A module-level loop whose end is unknown: follow its body once.
            self.ev(node.test, env)
            self._exec_branches(node, [node.body, node.orelse], env)
        elif isinstance(node, ast.If):
            test = self.ev(node.test, env)
            if isinstance(test, Const):
                self.exec_block(node.body if test.value else node.orelse, env)
            else:
                self._exec_branches(node, [node.body, node.orelse], env)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            chosen = self._import_fallback(node)
            if chosen is not None:
                self.exec_block(chosen, env)
            else:
                # The body (then `else`) is the normal path; each handler is an alternative to it.
                self._exec_branches(node, [node.body + node.orelse, *[h.body for h in node.handlers]], env)
            self.exec_block(node.finalbody, env)
        elif isinstance(node, ast.Return):
            raise _Return(self.ev(node.value, env) if node.value is not None else Const(None))
        elif isinstance(node, ast.Match):
            self.ev(node.subject, env)
            self._exec_branches(node, [c.body for c in node.cases], env)
        # Global, Nonlocal, Pass, Break, Continue, Delete, Assert, Raise: nothing to model

    def _import_fallback(self, node: ast.Try) -> list[ast.stmt] | None:
        i = import_fallback_choice(node, self.index, self.airflow)
        return None if i is None else ([*node.body, *node.orelse] if i == 0 else node.handlers[i - 1].body)

    def _exec_branches(self, node: ast.AST, blocks: list[list[ast.stmt]], env: Env) -> None:
        """Follow every branch of a condition we cannot decide. Tasks made in different branches of one
        statement never collide (only one branch runs); a variable the branches set differently becomes
        unknown afterwards (one set in a single branch keeps that value: using it is only valid there)."""
        saved = self.branch
        returned: _Return | None = None
        before = dict(env.vars)
        outcomes: list[dict[str, Any]] = []
        for i, block in enumerate(blocks):
            self.branch = (*saved, (id(node), i))
            env.vars = dict(before)
            try:
                self.exec_block(block, env)
            except _Return as r:
                returned = returned or r
            finally:
                self.branch = saved
                outcomes.append(env.vars)
        merged: dict[str, Any] = {}
        for key in {k for o in outcomes for k in o}:
            values = [o[key] for o in outcomes if key in o]
            first = values[0]
            merged[key] = first if all(v is first for v in values) else None
        env.vars = merged
        if returned is not None:
            raise returned

    def exec_augassign(self, node: ast.AugAssign, env: Env) -> None:
        value = self.ev(node.value, env)
        if isinstance(node.target, ast.Name):
            cur = env.get(node.target.id)
            if isinstance(node.op, ast.Add) and isinstance(cur, Seq):
                if isinstance(value, Seq):
                    cur.items.extend(value.items)
                    cur.complete &= value.complete
                else:
                    cur.complete = False
                return
            if isinstance(node.op, (ast.RShift, ast.LShift)):
                env.vars[node.target.id] = self.binop(node.op, cur, value, node)
                return
            env.vars[node.target.id] = self._arith(node.op, cur, value)

    def exec_import(self, node: ast.Import | ast.ImportFrom, env: Env) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    env.vars[alias.asname] = Ref(alias.name)
                else:
                    top = alias.name.split(".")[0]
                    env.vars[top] = Ref(top)
        else:
            if node.level:  # relative import: something local to the DAG folder
                for alias in node.names:
                    if alias.name != "*":
                        env.vars[alias.asname or alias.name] = None
                return
            mod = node.module or ""
            for alias in node.names:
                if alias.name != "*":
                    env.vars[alias.asname or alias.name] = Ref(f"{mod}.{alias.name}")

    def exec_with(self, node: ast.With | ast.AsyncWith, env: Env) -> None:
        pushed: list[Any] = []
        for item in node.items:
            value = self.ev(item.context_expr, env)
            if isinstance(value, Dag):
                value.registered = True
                self.dag_stack.append(value)
                self.group_stack.append(None)  # a new DAG context has no current group
                pushed.append(value)
            elif isinstance(value, Group):
                self.group_stack.append(value)
                if value.dag is not None:
                    self.dag_stack.append(value.dag)
                    pushed.append(("groupdag", value))
                pushed.append(value)
            elif isinstance(value, (Task, XArg)):
                task = value.task if isinstance(value, XArg) else value
                if task.is_setup or task.is_teardown:
                    pushed.append(("setup_teardown", task, len(self.tasks)))
            if item.optional_vars is not None:
                self.assign(item.optional_vars, value, env)
        try:
            self.exec_block(node.body, env)
            for p in pushed:
                if isinstance(p, tuple) and p[0] == "setup_teardown":
                    self._wrap_setup_teardown(p[1], self.tasks[p[2]:], node)
        finally:
            for p in reversed(pushed):
                if isinstance(p, Dag):
                    self.group_stack.pop()
                    self.dag_stack.pop()
                elif isinstance(p, Group):
                    self.group_stack.pop()
                elif p[0] == "groupdag":
                    self.dag_stack.pop()

    def _wrap_setup_teardown(self, st: Task, inner: list[Task], node: ast.AST) -> None:
        """`with teardown_task:` / `with setup_task:` puts the tasks made inside between the setups and the
        teardown (Airflow's SetupTeardownContext)."""
        # Only the tasks made directly in the block: Airflow leaves the tasks of nested TaskGroups alone.
        inner = [t for t in inner if t is not st and not t.is_setup and not t.is_teardown and t.group is st.group]
        if not inner:
            return
        ids = {id(t) for t in inner}
        roots = [t for t in inner if not any(id(u) in ids for u in t.upstream)]
        leaves = [t for t in inner if not any(id(d) in ids for d in t.downstream)]
        setups = [st] if st.is_setup else [u for u in st.upstream if u.is_setup]
        for s in setups:
            for r in roots:
                self.link(s, r, node)
        if st.is_teardown:
            for leaf in leaves:
                self.link(leaf, st, node)

    def exec_for(self, node: ast.For | ast.AsyncFor, env: Env) -> None:
        it = self.iterate(self.ev(node.iter, env))
        if it is None:
            self.assign(node.target, None, env)
            self.exec_block(node.body, env)
        else:
            for value in it[:MAX_LOOP]:
                self.assign(node.target, value, env)
                self.exec_block(node.body, env)
            if len(it) > MAX_LOOP:
                self.complete = False
        self.exec_block(node.orelse, env)

    def iterate(self, v: Any) -> list[Any] | None:
        if isinstance(v, Seq) and v.complete:
            return list(v.items)
        if isinstance(v, DictV) and v.complete:
            return list(v.items.keys())
        if isinstance(v, Const) and isinstance(v.value, str):
            return [Const(c) for c in v.value]
        return None

    def assign(self, target: ast.AST, value: Any, env: Env) -> None:
        if isinstance(target, ast.Name):
            env.vars[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            items = value.items if isinstance(value, Seq) and value.complete else None
            stars = [i for i, e in enumerate(target.elts) if isinstance(e, ast.Starred)]
            if items is not None and not stars and len(items) == len(target.elts):
                for t, v in zip(target.elts, items, strict=False):
                    self.assign(t, v, env)
            else:
                for t in target.elts:
                    self.assign(t.value if isinstance(t, ast.Starred) else t, None, env)
        elif isinstance(target, ast.Starred):
            self.assign(target.value, None, env)
        else:
            # attribute / subscript targets: evaluate the object for its side effects only
            pass

    # -- functions ---------------------------------------------------------------------------------------------
    def make_func(self, node: ast.FunctionDef | ast.AsyncFunctionDef, env: Env) -> Func:
        func = Func(node=node, env=env, kind="plain")
        # Decorators apply bottom-up; Airflow's are the only ones we model.
        for deco in reversed(node.decorator_list):
            call_kwargs: dict[str, Any] = {}
            target = deco
            if isinstance(deco, ast.Call):
                target = deco.func
                call_kwargs = {k.arg: self.ev(k.value, env) for k in deco.keywords if k.arg}
            v = self.ev(target, env)
            if not isinstance(v, Ref) or not v.is_airflow:
                continue  # other decorators (functools.wraps, local ones) keep the function as it is
            parts = v.path.split(".")
            # "airflow.sdk.task" / "airflow.decorators.task.bash" / "airflow.sdk.dag" ...
            if "task" in parts and parts[-1] != "task_group":
                i = len(parts) - 1 - parts[::-1].index("task")
                sub = parts[i + 1:]
                func.kind = "task"
                func.decorator = "@task" + "".join("." + s for s in sub)
                func.deco_kwargs.update(call_kwargs)
            elif parts[-1] in ("setup", "teardown"):
                if func.kind == "plain":
                    func.kind = "task"
                    func.decorator = "@task"
                if parts[-1] == "setup":
                    func.is_setup = True
                else:
                    func.is_teardown = True
            elif parts[-1] == "task_group":
                func.kind = "task_group"
                func.deco_kwargs.update(call_kwargs)
            elif parts[-1] == "asset" or parts[-2:] == ["asset", "multi"]:
                # Airflow 3's @asset: the function is a DAG of one task, named after the asset.
                func.kind = "asset"
                name = _str(call_kwargs.get("name")) if parts[-1] == "asset" and "name" in call_kwargs else None
                dag = self.new_dag(name or node.name, call_kwargs, node, call=deco if isinstance(deco, ast.Call) else None)
                dag.registered = True
                task = Task(task_id=None, operator="@asset", node=node)
                self.add_task(task, node.name, node, taskflow=True, dag=dag, group=None)
            elif parts[-1] == "dag":
                func.kind = "dag"
                func.deco_call = deco if isinstance(deco, ast.Call) else None
                func.deco_kwargs.update(call_kwargs)
                self.dag_funcs.append(func)
        return func

    def call_func(self, func: Func, args: list[Any], kwargs: dict[str, Any], node: ast.Call, env: Env) -> Any:
        if func.kind == "task":
            return self.make_taskflow(func, args, kwargs, node)
        if func.kind == "task_group":
            return self.call_task_group(func, args, kwargs, node)
        if func.kind == "dag":
            return self.call_dag_func(func, args, kwargs, node)
        return self.inline(func, args, kwargs)

    def inline(self, func: Func, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self.depth >= MAX_DEPTH:
            self.complete = False
            return None
        local = Env(func.env)
        a = func.node.args
        params = [*a.posonlyargs, *a.args]
        defaults = [None] * (len(params) - len(a.defaults)) + list(a.defaults)
        for i, p in enumerate(params):
            if i < len(args):
                local.vars[p.arg] = args[i]
            elif p.arg in kwargs:
                local.vars[p.arg] = kwargs[p.arg]
            elif defaults[i] is not None:
                local.vars[p.arg] = self.ev(defaults[i], func.env)
            else:
                local.vars[p.arg] = None
        for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=False):
            local.vars[p.arg] = kwargs.get(p.arg, self.ev(d, func.env) if d is not None else None)
        if a.vararg:
            local.vars[a.vararg.arg] = Seq(list(args[len(params):]))
        if a.kwarg:
            known = {p.arg for p in [*params, *a.kwonlyargs]}
            local.vars[a.kwarg.arg] = DictV({k: v for k, v in kwargs.items() if k not in known})
        self.depth += 1
        try:
            self.exec_block(func.node.body, local)
        except _Return as r:
            return r.value
        finally:
            self.depth -= 1
        return Const(None)

    def call_dag_func(self, func: Func, args: list[Any], kwargs: dict[str, Any], node: ast.Call) -> Any:
        self.called_dag_funcs.add(id(func))
        kw = dict(func.deco_kwargs)
        dag_id = _str(kw.get("dag_id")) if "dag_id" in kw else func.node.name
        dag = self.new_dag(dag_id, kw, func.node, call=func.deco_call)
        dag.registered = True
        self.dag_stack.append(dag)
        self.group_stack.append(None)
        try:
            self.inline(func, args, kwargs)
        finally:
            self.group_stack.pop()
            self.dag_stack.pop()
        return dag

    def call_task_group(self, func: Func, args: list[Any], kwargs: dict[str, Any], node: ast.Call) -> Any:
        kw = {**func.deco_kwargs, **func.override}
        gid = _str(kw["group_id"]) if "group_id" in kw else func.node.name
        group = self.new_group(gid, kw, node, add_suffix=True)
        self.group_stack.append(group)
        pushed_dag = False
        if group.dag is not None and (not self.dag_stack or self.dag_stack[-1] is not group.dag):
            self.dag_stack.append(group.dag)
            pushed_dag = True
        try:
            ret = self.inline(func, args, kwargs)
        finally:
            self.group_stack.pop()
            if pushed_dag:
                self.dag_stack.pop()
        if ret is None or (isinstance(ret, Const) and ret.value is None):
            return group
        return ret

    # -- DAGs, groups, tasks -------------------------------------------------------------------------------------
    def current_dag(self) -> Dag | None:
        return self.dag_stack[-1] if self.dag_stack else None

    def current_group(self) -> Group | None:
        return self.group_stack[-1] if self.group_stack else None

    def new_dag(self, dag_id: str | None, kw: dict[str, Any], node: ast.AST, call: ast.Call | None) -> Dag:
        dag = Dag(dag_id=dag_id, node=node)
        sched_key = "schedule" if "schedule" in kw else ("schedule_interval" if "schedule_interval" in kw else None)
        if sched_key:
            sv = kw[sched_key]
            if isinstance(sv, Const) and isinstance(sv.value, str):
                dag.schedule, dag.schedule_is_str = sv.value, True
            elif isinstance(sv, Const) and sv.value is None:
                dag.schedule = None
            else:
                dag.schedule = "<expr>"
            if call is not None:
                for k in call.keywords:
                    if k.arg == sched_key:
                        dag.schedule_node = k.value
        if "default_args" in kw:
            dag.has_default_args = True
            dag.default_args = kw["default_args"]
        if dag_id is not None:
            self._check_key(dag_id, "dag_id", node)
        self.dags.append(dag)
        return dag

    def _check_key(self, key: str, what: str, node: ast.AST | None, group: bool = False) -> None:
        regex = GROUP_KEY_RE if group else KEY_RE
        if len(key) > MAX_KEY_LEN:
            self.issues.append(Issue("DC307", node, f"{what} {key[:40]!r}... is {len(key)} characters long; "
                                     f"Airflow allows at most {MAX_KEY_LEN}"))
        elif not regex.match(key):
            allowed = "letters, digits, '_' and '-'" if group else "letters, digits, '_', '-' and '.'"
            self.issues.append(Issue("DC307", node, f"{what} {key!r} has characters Airflow rejects; "
                                     f"it allows {allowed}"))

    def new_group(self, gid: str | None, kw: dict[str, Any], node: ast.AST, add_suffix: bool) -> Group:
        parent = kw.get("parent_group") if isinstance(kw.get("parent_group"), Group) else self.current_group()
        dag = kw.get("dag") if isinstance(kw.get("dag"), Dag) else (parent.dag if parent else self.current_dag())
        prefix = _const(kw.get("prefix_group_id", Const(True)))
        prefix = True if prefix is None else bool(prefix)
        if gid is not None:
            self._check_key(gid, "group_id", node, group=True)
        if dag is None:
            self.issues.append(Issue("DC305", node, f"TaskGroup {gid!r} is created outside any DAG",
                                     "Create the TaskGroup inside `with DAG(...)` or a @dag function, or pass dag="))
        full = gid
        if gid is not None and parent is not None and parent.prefix_group_id and parent.group_id:
            full = f"{parent.group_id}.{gid}"
        elif gid is not None and parent is not None and parent.group_id is None and parent.prefix_group_id:
            full = None
        if full is not None and dag is not None:
            used = dag.group_ids | set(dag.tasks)
            if full in used:
                if add_suffix:
                    base = re.split(r"__\d+$", full)[0]
                    suffixes = sorted(int(u.rsplit("__", 1)[1]) for u in used if re.match(rf"^{re.escape(base)}__\d+$", u))
                    full = f"{base}__{suffixes[-1] + 1}" if suffixes else f"{full}__1"
                elif not self._exclusive_with_group(dag, full):
                    self.issues.append(Issue("DC305", node, f"group_id {full!r} has already been added to the DAG",
                                             "Give every TaskGroup a unique group_id"))
            dag.group_ids.add(full)
        group = Group(group_id=full, dag=dag, parent=parent, prefix_group_id=prefix, node=node, branch=self.branch)
        if parent is not None:
            parent.children.append(group)
        self.groups.append(group)
        return group

    def _exclusive_with_group(self, dag: Dag, full: str) -> bool:
        for g in self.groups:
            if g.dag is dag and g.group_id == full and self._exclusive(g.branch, self.branch):
                return True
        return False

    @staticmethod
    def _exclusive(a: tuple, b: tuple) -> bool:
        """True when two branch paths went different ways at some shared `if`."""
        da = dict(a)
        return any(k in da and da[k] != v for k, v in b)

    def add_task(self, task: Task, short_id: str | None, node: ast.AST, taskflow: bool,
                 dag: Dag | None, group: Group | None) -> None:
        task.branch = self.branch
        if short_id is not None:
            self._check_key(short_id, "task_id", node)
        full = short_id
        if short_id is not None and group is not None and group.prefix_group_id:
            full = f"{group.group_id}.{short_id}" if group.group_id else None
        if taskflow and full is not None and dag is not None and full in dag.tasks:
            # get_unique_task_id: TaskFlow calls repeated in one DAG get __1, __2, ...
            core = re.split(r"__\d+$", short_id)[0]
            prefix = re.split(r"__\d+$", full)[0]
            suffixes = [int(m.group(1)) for t in dag.tasks if (m := re.match(rf"^{re.escape(prefix)}__(\d+)$", t))]
            short_id = f"{core}__{max(suffixes + [0]) + 1}"
            full = f"{group.group_id}.{short_id}" if group is not None and group.prefix_group_id else short_id
        task.task_id = full
        task.group = group
        if group is not None:
            group.children.append(task)
        self.tasks.append(task)
        if dag is not None:
            self.attach(task, dag, node)

    def attach(self, task: Task, dag: Dag, node: ast.AST | None) -> None:
        task.dag = dag
        if task.task_id is None:
            dag.unknown_tasks.append(task)
            return
        other = dag.tasks.get(task.task_id)
        if other is not None and other is not task:
            if not self._exclusive(other.branch, task.branch):
                self.issues.append(Issue("DC301", node or task.node,
                                         f"task id {task.task_id!r} is already used in DAG {dag.dag_id!r} "
                                         f"(line {getattr(other.node, 'lineno', '?')})",
                                         "Give every task a unique task_id"))
            return
        if task.task_id in dag.group_ids:
            self.issues.append(Issue("DC301", node or task.node,
                                     f"task id {task.task_id!r} is already a TaskGroup id in DAG {dag.dag_id!r}",
                                     "Give the task and the TaskGroup different ids"))
        dag.tasks[task.task_id] = task

    def make_operator(self, cls: Any, args: list[Any], kwargs: dict[str, Any], node: ast.Call) -> Task:
        op_name = cls.name
        tid = _str(kwargs.get("task_id")) if "task_id" in kwargs else None
        dag = kwargs.get("dag") if isinstance(kwargs.get("dag"), Dag) else None
        group = kwargs.get("task_group") if isinstance(kwargs.get("task_group"), Group) else None
        if group is None:
            group = self.current_group()
            if group is not None and dag is not None and group.dag is not dag:
                group = None
        if dag is None:
            dag = group.dag if group is not None and group.dag is not None else self.current_dag()
        task = Task(task_id=None, operator=op_name, node=node, kwargs=kwargs, op_ref=cls, call=node)
        self.add_task(task, tid, node, taskflow=False, dag=dag, group=group)
        # XComArgs passed as arguments make the producers upstream of this task.
        ups: list[Task] = []
        for v in [*args, *kwargs.values()]:
            _flatten_xargs(v, ups)
        for up in ups:
            self.link(up, task, node)
        return task

    def make_taskflow(self, func: Func, args: list[Any], kwargs: dict[str, Any], node: ast.Call) -> XArg:
        kw = {**func.deco_kwargs, **func.override}
        tid = _str(kw["task_id"]) if "task_id" in kw else func.node.name
        dag = kw.get("dag") if isinstance(kw.get("dag"), Dag) else None
        group = kw.get("task_group") if isinstance(kw.get("task_group"), Group) else self.current_group()
        if dag is None:
            dag = group.dag if group is not None and group.dag is not None else self.current_dag()
        task = Task(task_id=None, operator=func.decorator or "@task", node=node, kwargs=kw,
                    is_setup=func.is_setup, is_teardown=func.is_teardown, call=node)
        self.add_task(task, tid, node, taskflow=True, dag=dag, group=group)
        ups: list[Task] = []
        for v in [*args, *kwargs.values(), *func.override.values()]:
            _flatten_xargs(v, ups)
        for up in ups:
            self.link(up, task, node)
        return XArg(task)

    # -- dependencies ----------------------------------------------------------------------------------------------
    def link(self, up: Task, down: Task, node: ast.AST | None) -> None:
        if down in up.downstream:
            return
        up.downstream.append(down)
        down.upstream.append(up)
        # Airflow gives a DAG-less task the DAG of the task it is linked to.
        if up.dag is None and down.dag is not None:
            self.attach(up, down.dag, node)
        elif down.dag is None and up.dag is not None:
            self.attach(down, up.dag, node)

    def roots(self, v: Any) -> list[Task]:
        """The tasks a dependency arrives at: a task itself, a group's roots (computed now)."""
        if isinstance(v, Task):
            return [v]
        if isinstance(v, XArg):
            return [v.task]
        if isinstance(v, Group):
            tasks = v.tasks()
            ids = {id(t) for t in tasks}
            return [t for t in tasks if not any(id(u) in ids for u in t.upstream)]
        if isinstance(v, Seq):
            return [t for item in v.items for t in self.roots(item)]
        return []

    def leaves(self, v: Any) -> list[Task]:
        if isinstance(v, Task):
            return [v]
        if isinstance(v, XArg):
            return [v.task]
        if isinstance(v, Group):
            tasks = v.tasks()
            ids = {id(t) for t in tasks}
            out: list[Task] = []
            for t in tasks:
                if not any(id(d) in ids for d in t.downstream):
                    if not t.is_teardown:
                        out.append(t)
                    else:
                        out.extend(u for u in t.upstream if id(u) in ids and not u.is_teardown and not u.is_setup)
            return out
        if isinstance(v, Seq):
            return [t for item in v.items for t in self.leaves(item)]
        return []

    def connect(self, up: Any, down: Any, node: ast.AST | None) -> None:
        for u in self.leaves(up):
            for d in self.roots(down):
                self.link(u, d, node)

    def _is_dep_value(self, v: Any) -> bool:
        return isinstance(v, (Task, XArg, Group, LabelV)) or (
            isinstance(v, Seq) and any(isinstance(i, (Task, XArg, Group)) for i in v.items))

    def binop(self, op: ast.operator, left: Any, right: Any, node: ast.AST) -> Any:
        if isinstance(op, ast.LShift):
            left, right = right, left  # a << b is b >> a; the value is still the right-hand side
            value_if_ok = left
        else:
            value_if_ok = right
        if isinstance(left, Seq) and isinstance(right, Seq) and (self._is_dep_value(left) or self._is_dep_value(right)):
            self.issues.append(Issue("DC308", node, "a list of tasks cannot be set upstream of another list with "
                                     ">> or << (Python raises TypeError: unsupported operand types)",
                                     "Use cross_downstream(upstreams, downstreams) or chain(...)"))
            return None
        if isinstance(left, LabelV):
            for u in left.ups:
                for d in self.roots(right):
                    self.link(u, d, node)
            return right if not isinstance(op, ast.LShift) else value_if_ok
        if isinstance(right, LabelV):
            right.ups = self.leaves(left)
            return right
        if not (self._is_dep_value(left) and self._is_dep_value(right)):
            if {type(left), type(right)} == {Const, Task}:
                self._not_a_task(left if isinstance(left, Const) else right, "`>>`/`<<`", node)
            return None
        self.connect(left, right, node)
        return value_if_ok

    def _not_a_task(self, value: Const, where: str, node: ast.AST) -> None:
        """A literal set up- or downstream of a task (``chain(2, t)``, ``t >> "x"``): Airflow calls a task method
        on it (AttributeError: 'int' object has no attribute 'update_relative') when it parses the file."""
        self.issues.append(Issue("DC308", node, f"{where} got {value.value!r}, which is not a task: Airflow "
                                 f"raises AttributeError (no 'update_relative') when it parses the file",
                                 "Set dependencies between tasks only (the variables the operators are assigned to)"))

    def do_chain(self, name: str, args: list[Any], node: ast.Call) -> None:
        if name == "cross_downstream":
            if len(args) == 2:
                for u in self.leaves(args[0]):
                    for d in self.roots(args[1]):
                        self.link(u, d, node)
            return
        if name in ("chain", "chain_linear") and any(self._is_dep_value(a) for a in args):
            literal = next((a for a in args if isinstance(a, Const)), None)
            if literal is not None:
                self._not_a_task(literal, f"{name}()", node)
                return
        for up, down in zip(args, args[1:], strict=False):
            if name == "chain" and isinstance(up, Seq) and isinstance(down, Seq):
                if len(up.items) != len(down.items):
                    self.issues.append(Issue("DC308", node, f"chain() got lists of different lengths "
                                             f"({len(up.items)} and {len(down.items)}); Airflow raises ValueError",
                                             "Give chain() lists of equal length, or use cross_downstream()"))
                    continue
                for a, b in zip(up.items, down.items, strict=False):
                    self.connect(a, b, node)
            else:
                self.connect(up, down, node)

    # -- expressions -------------------------------------------------------------------------------------------------
    def ev(self, node: ast.AST | None, env: Env) -> Any:
        if node is None:
            return None
        if isinstance(node, ast.Constant):
            return Const(node.value)
        if isinstance(node, ast.Name):
            if env.has(node.id):
                return env.get(node.id)
            if node.id == "__name__":
                return Const("unusual_prefix_dag_module")
            if node.id in BUILTIN_FUNCS:
                return Builtin(node.id)
            return None
        if isinstance(node, ast.Call):
            return self.ev_call(node, env)
        if isinstance(node, ast.BinOp):
            left = self.ev(node.left, env)
            right = self.ev(node.right, env)
            if isinstance(node.op, (ast.RShift, ast.LShift)):
                return self.binop(node.op, left, right, node)
            return self._arith(node.op, left, right)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items: list[Any] = []
            complete = True
            for e in node.elts:
                if isinstance(e, ast.Starred):
                    v = self.ev(e.value, env)
                    if isinstance(v, Seq):
                        items.extend(v.items)
                        complete &= v.complete
                    else:
                        complete = False
                else:
                    items.append(self.ev(e, env))
            return Seq(items, complete)
        if isinstance(node, ast.Dict):
            d: dict[Any, Any] = {}
            complete = True
            for k, v in zip(node.keys, node.values, strict=False):
                val = self.ev(v, env)
                if k is None:
                    if isinstance(val, DictV):
                        d.update(val.items)
                        complete &= val.complete
                    else:
                        complete = False
                    continue
                kv = self.ev(k, env)
                if isinstance(kv, Const) and isinstance(kv.value, (str, int, float, bool)):
                    d[kv.value] = val
                else:
                    complete = False
            return DictV(d, complete)
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant):
                    parts.append(str(v.value))
                elif isinstance(v, ast.FormattedValue):
                    val = self.ev(v.value, env)
                    if not isinstance(val, Const) or v.format_spec is not None:
                        return None
                    try:
                        parts.append(repr(val.value) if v.conversion == ord("r") else str(val.value))
                    except Exception:
                        return None
                else:
                    return None
            return Const("".join(parts))
        if isinstance(node, ast.Attribute):
            return self.ev_attribute(node, env)
        if isinstance(node, ast.Subscript):
            base = self.ev(node.value, env)
            idx = self.ev(node.slice, env)
            if isinstance(base, XArg):
                return XArg(base.task)
            k = _const(idx)
            if isinstance(base, Seq) and base.complete and isinstance(k, int) and -len(base.items) <= k < len(base.items):
                return base.items[k]
            if isinstance(base, DictV) and k is not None and k in base.items:
                return base.items[k]
            return None
        if isinstance(node, ast.Compare):
            return self._compare(node, env)
        if isinstance(node, ast.BoolOp):
            vals = [self.ev(v, env) for v in node.values]
            if all(isinstance(v, Const) for v in vals):
                out = vals[0]
                for v in vals[1:]:
                    if isinstance(node.op, ast.And) and not out.value:
                        break
                    if isinstance(node.op, ast.Or) and out.value:
                        break
                    out = v
                return out
            return None
        if isinstance(node, ast.UnaryOp):
            v = self.ev(node.operand, env)
            if isinstance(v, Const):
                try:
                    if isinstance(node.op, ast.Not):
                        return Const(not v.value)
                    if isinstance(node.op, ast.USub):
                        return Const(-v.value)
                except Exception:
                    return None
            return None
        if isinstance(node, ast.IfExp):
            test = self.ev(node.test, env)
            if isinstance(test, Const):
                return self.ev(node.body if test.value else node.orelse, env)
            self.ev(node.body, env)
            self.ev(node.orelse, env)
            return None
        if isinstance(node, ast.NamedExpr):
            v = self.ev(node.value, env)
            env.vars[node.target.id] = v
            return v
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)):
            return self._comprehension(node, env)
        if isinstance(node, ast.Starred):
            return self.ev(node.value, env)
        if isinstance(node, ast.Await):
            return self.ev(node.value, env)
        # Lambda, Yield, ...: not modelled
        return None

    def _comprehension(self, node: ast.ListComp | ast.GeneratorExp | ast.SetComp | ast.DictComp, env: Env) -> Any:
        """`[Op(task_id=f"t{i}") for i in range(3)]`: unrolled like a loop (one generator only). Over an
        iterable that is not known statically the element is still evaluated once, as a `for` body is, so
        that the operators it builds get their arguments checked; the result is then unknown."""
        if len(node.generators) != 1:
            return None
        gen = node.generators[0]
        it = self.iterate(self.ev(gen.iter, env))
        local = Env(env)
        if isinstance(node, ast.DictComp):
            if it is None:
                self.assign(gen.target, None, local)
                self.ev(node.key, local)
                self.ev(node.value, local)
                return None
            d: dict[Any, Any] = {}
            for value in it[:MAX_LOOP]:
                self._tick()
                self.assign(gen.target, value, local)
                conds = [self.ev(cond, local) for cond in gen.ifs]
                if any(not isinstance(c, Const) for c in conds):
                    return None
                if not all(c.value for c in conds):
                    continue
                kv = self.ev(node.key, local)
                val = self.ev(node.value, local)
                if not isinstance(kv, Const):
                    return None
                d[kv.value] = val
            return DictV(d, len(it) <= MAX_LOOP)
        if it is None:
            self.assign(gen.target, None, local)
            self.ev(node.elt, local)
            return None
        out = []
        for value in it[:MAX_LOOP]:
            self._tick()
            self.assign(gen.target, value, local)
            keep = True
            for cond in gen.ifs:
                c = self.ev(cond, local)
                if not isinstance(c, Const):
                    return None
                keep &= bool(c.value)
            if keep:
                out.append(self.ev(node.elt, local))
        return Seq(out, len(it) <= MAX_LOOP)

    def _compare(self, node: ast.Compare, env: Env) -> Any:
        left = self.ev(node.left, env)
        if len(node.ops) != 1:
            return None
        right = self.ev(node.comparators[0], env)
        if isinstance(left, Const) and isinstance(right, Const):
            try:
                op = node.ops[0]
                a, b = left.value, right.value
                table = {ast.Eq: lambda: a == b, ast.NotEq: lambda: a != b, ast.Lt: lambda: a < b,
                         ast.LtE: lambda: a <= b, ast.Gt: lambda: a > b, ast.GtE: lambda: a >= b,
                         ast.Is: lambda: a is b, ast.IsNot: lambda: a is not b,
                         ast.In: lambda: a in b, ast.NotIn: lambda: a not in b}
                fn = table.get(type(op))
                return Const(fn()) if fn else None
            except Exception:
                return None
        return None

    def _arith(self, op: ast.operator, left: Any, right: Any) -> Any:
        if isinstance(left, Seq) and isinstance(right, Seq) and isinstance(op, ast.Add):
            return Seq([*left.items, *right.items], left.complete and right.complete)
        if isinstance(left, Const) and isinstance(right, Const):
            a, b = left.value, right.value
            try:
                if isinstance(op, ast.Add):
                    return Const(a + b)
                if isinstance(op, ast.Sub):
                    return Const(a - b)
                if isinstance(op, ast.Mult):
                    if isinstance(a, str) and isinstance(b, int) and b > 1000 or isinstance(b, str) and isinstance(a, int) and a > 1000:
                        return None
                    return Const(a * b)
                if isinstance(op, ast.Mod) and isinstance(a, str):
                    return Const(a % b)
                if isinstance(op, ast.FloorDiv):
                    return Const(a // b)
            except Exception:
                return None
        if isinstance(left, Const) and isinstance(left.value, str) and isinstance(op, ast.Mod) and isinstance(right, Seq):
            vals = [_const(v) for v in right.items]
            if right.complete and all(isinstance(v, Const) for v in right.items):
                try:
                    return Const(left.value % tuple(vals))
                except Exception:
                    return None
        return None

    def ev_attribute(self, node: ast.Attribute, env: Env) -> Any:
        base = self.ev(node.value, env)
        attr = node.attr
        if isinstance(base, Ref):
            if base.name == "TriggerRule" and base.is_airflow and attr.isupper():
                return Const(attr.lower())  # a str enum: its members format as their values
            return Ref(f"{base.path}.{attr}")
        if isinstance(base, Task):
            if attr == "output":
                return XArg(base)
            return Method(base, attr)
        if isinstance(base, XArg):
            if attr in ("set_downstream", "set_upstream", "as_setup", "as_teardown", "operator"):
                return base.task if attr == "operator" else Method(base.task, attr)
            if attr in ("map", "zip", "concat", "resolve"):
                return Method(base, attr)
            return None
        if isinstance(base, (Group, Func, Partial, Seq, DictV, Dag, LocalClass)):
            return Method(base, attr)
        if isinstance(base, Const) and isinstance(base.value, str):
            return Method(base, attr)
        return None

    def _args(self, node: ast.Call, env: Env) -> tuple[list[Any], dict[str, Any], bool]:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        complete = True
        for a in node.args:
            if isinstance(a, ast.Starred):
                v = self.ev(a.value, env)
                if isinstance(v, Seq):
                    args.extend(v.items)
                else:
                    complete = False
            else:
                args.append(self.ev(a, env))
        for k in node.keywords:
            v = self.ev(k.value, env)
            if k.arg is None:
                if isinstance(v, DictV):
                    kwargs.update({str(kk): vv for kk, vv in v.items.items()})
                    complete &= v.complete
                else:
                    complete = False
            else:
                kwargs[k.arg] = v
        return args, kwargs, complete

    def _is_operator_class(self, v: Any) -> bool:
        if isinstance(v, LocalClass):
            return v.is_operator
        if isinstance(v, Ref) and v.is_airflow:
            if self.index is not None:
                info = self.index.class_info(v.path, self.airflow)
                if info is not None:
                    return bool(info.get("operator"))
            n = v.name
            return n.endswith(("Operator", "Sensor")) or n in OPERATOR_BASES or n.endswith("SensorAsync")
        return False

    def ev_call(self, node: ast.Call, env: Env) -> Any:
        self._tick()
        fn = self.ev(node.func, env)
        args, kwargs, complete = self._args(node, env)
        if isinstance(fn, Ref):
            return self.call_ref(fn, args, kwargs, complete, node)
        if isinstance(fn, Func):
            return self.call_func(fn, args, kwargs, node, env)
        if isinstance(fn, LocalClass):
            if fn.is_operator:
                task = self.make_operator(fn, args, kwargs, node)
                task.kwargs_complete = complete
                return task
            return None
        if isinstance(fn, Method):
            return self.call_method(fn, args, kwargs, node, env)
        if isinstance(fn, Builtin):
            return self.call_builtin(fn.name, args)
        if isinstance(fn, Task) and fn.op_ref is not None:  # an operator instance: not callable
            what = f"the task {fn.task_id!r}" if fn.task_id else "a task"
            self.issues.append(Issue("DC309", node, f"{what} ({fn.operator}) is called like a function (TypeError: "
                                     f"'{fn.operator}' object is not callable)",
                                     "use the task itself in the dependencies; only a @task function is called"))
        return None

    def call_ref(self, fn: Ref, args: list[Any], kwargs: dict[str, Any], complete: bool, node: ast.Call) -> Any:
        if not fn.is_airflow:
            # An operator of a package outside the index (`FivetranOperator(task_id="sync")`): its arguments
            # are not checked, but it is a task of the DAG, with its id and its dependencies.
            if fn.name.endswith(("Operator", "Sensor", "SensorAsync")) and _str(kwargs.get("task_id")) is not None:
                task = self.make_operator(fn, args, kwargs, node)
                task.kwargs_complete = complete
                return task
            return None
        name = fn.name
        if name == "partial":
            cls = Ref(fn.path.rsplit(".", 1)[0])
            return Partial(cls, kwargs, node) if self._is_operator_class(cls) else None
        if name in DAG_CLASSES:
            dag_id = args[0] if args else kwargs.get("dag_id")
            return self.new_dag(_str(dag_id), kwargs, node, call=node)
        if name in TASKGROUP_CLASSES:
            gid = args[0] if args else kwargs.get("group_id")
            return self.new_group(_str(gid), kwargs, node, add_suffix=False)
        if name in CHAIN_FUNCS:
            self.do_chain(name, args, node)
            return None
        if name == "Label":
            return LabelV()
        if name == "XComArg" and args and isinstance(args[0], Task):
            return XArg(args[0])
        if self._is_operator_class(fn):
            task = self.make_operator(fn, args, kwargs, node)
            task.kwargs_complete = complete
            return task
        return None

    def call_method(self, m: Method, args: list[Any], kwargs: dict[str, Any], node: ast.Call, env: Env) -> Any:
        obj, name = m.obj, m.name
        if isinstance(obj, (Task, Group)):
            if name in ("set_downstream", "set_upstream") and args:
                if name == "set_downstream":
                    self.connect(obj, args[0], node)
                else:
                    self.connect(args[0], obj, node)
                return None
            if isinstance(obj, Task) and name == "as_setup":
                obj.is_setup = True
                return obj
            if isinstance(obj, Task) and name == "as_teardown":
                obj.is_teardown = True
                setups = kwargs.get("setups")
                if setups is not None:
                    self.connect(setups, obj, node)
                return obj
            return None
        if isinstance(obj, XArg):
            return XArg(obj.task)
        if isinstance(obj, Func):
            if name in ("override", "partial"):
                return Func(node=obj.node, env=obj.env, kind=obj.kind, decorator=obj.decorator,
                            deco_kwargs=obj.deco_kwargs, override={**obj.override, **kwargs},
                            is_setup=obj.is_setup, is_teardown=obj.is_teardown)
            if name in ("expand", "expand_kwargs") and obj.kind == "task":
                return self.make_taskflow(obj, [], kwargs if name == "expand" else {}, node)
            if name in ("expand", "expand_kwargs") and obj.kind == "task_group":
                return self.call_task_group(obj, [], kwargs, node)
            return None
        if isinstance(obj, LocalClass):
            if name == "partial" and obj.is_operator:
                return Partial(obj, kwargs, node)
            return None
        if isinstance(obj, Partial):
            if name in ("expand", "expand_kwargs"):
                return self.make_operator(obj.cls, [], {**obj.kwargs, **kwargs}, obj.node)
            return None
        if isinstance(obj, Seq):
            if name == "append" and len(args) == 1:
                obj.items.append(args[0])
            elif name == "extend" and len(args) == 1:
                if isinstance(args[0], Seq):
                    obj.items.extend(args[0].items)
                else:
                    obj.complete = False
            elif name == "insert" and len(args) == 2:
                idx = _const(args[0])
                if isinstance(idx, int):
                    obj.items.insert(idx, args[1])
                else:
                    obj.complete = False
            elif name in ("pop", "remove", "clear", "sort", "reverse"):
                obj.complete = False
            return None
        if isinstance(obj, DictV):
            if name == "get" and args:
                k = _const(args[0])
                return obj.items.get(k, args[1] if len(args) > 1 else Const(None)) if obj.complete else None
            if name in ("items", "keys", "values") and obj.complete:
                if name == "keys":
                    return Seq([Const(k) for k in obj.items])
                if name == "values":
                    return Seq(list(obj.items.values()))
                return Seq([Seq([Const(k), v]) for k, v in obj.items.items()])
            if name in ("update", "pop", "setdefault", "clear"):
                obj.complete = False
            return None
        if isinstance(obj, Const) and isinstance(obj.value, str):
            if name == "format" and all(isinstance(a, Const) for a in args) and all(isinstance(v, Const) for v in kwargs.values()):
                try:
                    return Const(obj.value.format(*[a.value for a in args], **{k: v.value for k, v in kwargs.items()}))
                except Exception:
                    return None
            if name in ("upper", "lower", "strip") and not args:
                return Const(getattr(obj.value, name)())
            if name == "replace" and len(args) == 2 and all(isinstance(a, Const) and isinstance(a.value, str) for a in args):
                return Const(obj.value.replace(args[0].value, args[1].value))
            if name == "join" and len(args) == 1 and isinstance(args[0], Seq) and all(
                    isinstance(i, Const) and isinstance(i.value, str) for i in args[0].items):
                return Const(obj.value.join(i.value for i in args[0].items))
            return None
        return None

    def call_builtin(self, name: str, args: list[Any]) -> Any:
        vals = [_const(a) for a in args]
        if name == "range" and args and all(isinstance(a, Const) and isinstance(a.value, int) for a in args):
            try:
                r = range(*vals)
            except Exception:
                return None
            if len(r) > 10000:
                return None
            return Seq([Const(i) for i in r])
        if name == "len" and len(args) == 1:
            if isinstance(args[0], Seq) and args[0].complete:
                return Const(len(args[0].items))
            if isinstance(args[0], Const) and isinstance(args[0].value, (str, list, tuple)):
                return Const(len(args[0].value))
            return None
        if name == "enumerate" and args and isinstance(args[0], Seq) and args[0].complete:
            start = vals[1] if len(vals) > 1 and isinstance(vals[1], int) else 0
            return Seq([Seq([Const(i + start), v]) for i, v in enumerate(args[0].items)])
        if name == "zip" and args and all(isinstance(a, Seq) and a.complete for a in args):
            return Seq([Seq(list(t)) for t in zip(*[a.items for a in args], strict=False)])
        if name == "str" and len(args) == 1 and isinstance(args[0], Const):
            return Const(str(args[0].value))
        if name in ("list", "tuple", "sorted", "reversed") and len(args) == 1:
            it = self.iterate(args[0])
            if it is None:
                return None
            if name == "sorted":
                if all(isinstance(i, Const) for i in it):
                    try:
                        return Seq(sorted(it, key=lambda c: c.value))
                    except TypeError:
                        return None
                return None
            return Seq(list(reversed(it)) if name == "reversed" else it)
        if name == "dict" and not args:
            return None
        return None
