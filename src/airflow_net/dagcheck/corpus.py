"""The agreement corpus: real example DAGs from the apache-airflow wheels on PyPI, plus mutated copies
with one known defect each. The tests and tools/bench_dagcheck.py build it; nothing of it is committed.

    wheels = fetch_wheels(".cache/dagcheck/wheels")           # pip download (PyPI), cached
    examples = example_dags(wheels)                            # [Example(name, source, airflow)]
    mutants = [m for e in examples for m in mutate(e)]         # one defect each, with the expected code
"""

from __future__ import annotations

import ast
import logging
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from airflow_net.utils import UserError

log = logging.getLogger(__name__)

# The wheels whose example DAGs form the corpus: Airflow 2.10 and 3 core, and each provider wheel of the
# ground-truth environments (tools/airflow_env.sh) that ships example DAGs, at the version installed there:
# standard (1.9.2 with Airflow 2.10, 1.21.0 with 3) and common-sql (2.4.0 with 3; 1.29.0 ships none).
WHEELS = {
    2: ["apache-airflow==2.10.5", "apache-airflow-providers-standard==1.9.2"],
    3: ["apache-airflow-core==3.3.2", "apache-airflow-providers-standard==1.21.0",
        "apache-airflow-providers-common-sql==2.4.0"],
}
# Folders of helpers (not DAG files) inside example_dags/.
NOT_DAGS = ("/libs/", "/plugins/", "/subdags/", "/sql/", "__init__.py")

# Each mutation and the code the validator must report for it; removed-import differs per version.
MUTATIONS = ("syntax-error", "missing-import", "undefined-name", "unknown-kwarg", "cycle", "duplicate-task-id",
             "xcom-missing-task", "invalid-cron", "task-outside-dag", "removed-import", "timetable-cron",
             "invalid-asset", "deprecated-import")
EXPECTED = {
    "syntax-error": "DC001", "missing-import": "DC102", "undefined-name": "DC101", "unknown-kwarg": "DC201",
    "cycle": "DC302", "duplicate-task-id": "DC301", "xcom-missing-task": "DC303", "invalid-cron": "DC401",
    "task-outside-dag": "DC304", "removed-import": "DC104", "timetable-cron": "DC401", "invalid-asset": "DC403",
    # Not a defect: a deprecated path the target still loads. It must give its warning, and no error.
    "deprecated-import": "DC105",
}


def expected_code(mutation: str, airflow: int) -> str:
    if mutation == "removed-import" and airflow == 2:
        return "DC103"  # airflow.contrib was removed in Airflow 2.0: unknown in 2.10
    return EXPECTED[mutation]


@dataclass
class Example:
    name: str  # "3/example_xcom.py"
    source: str
    airflow: int
    mutation: str | None = None  # None: the unmodified example
    expected: str | None = None  # the code this mutation must produce
    # Modules the file imports from its own package (import-relative path -> bytes), put beside it for the
    # DagBag as an installed package would be (see people.py); empty for Apache's examples.
    support: dict[str, bytes] = field(default_factory=dict)


def fetch_wheels(cache: str | Path) -> dict[int, list[Path]]:
    """Download the wheels once into `cache` (pip download, no dependencies)."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[int, list[Path]] = {}
    for major, reqs in WHEELS.items():
        paths = []
        for req in reqs:
            name, version = req.split("==")
            stem = f"{name.replace('-', '_')}-{version}-"
            found = sorted(cache.glob(f"{stem}*.whl"))
            if not found:
                log.info("downloading %s into %s", req, cache)
                proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                                       ":all:", "-q", "-d", str(cache), req], capture_output=True, text=True)
                found = sorted(cache.glob(f"{stem}*.whl"))
                if proc.returncode != 0 or not found:
                    raise UserError(f"could not download {req} from PyPI: {proc.stderr.strip()[-300:]}")
            paths.append(found[0])
        out[major] = paths
    return out


def example_dags(wheels: dict[int, list[Path]]) -> list[Example]:
    """The example DAG files inside the wheels (helpers excluded), sorted by name."""
    out = []
    seen: set[str] = set()
    for major, paths in sorted(wheels.items()):
        for whl in paths:
            with zipfile.ZipFile(whl) as z:
                for info in z.infolist():
                    n = info.filename
                    # helpers are judged by their place under example_dags/ (common/sql/ itself is no helper)
                    inner = "/" + n.split("/example_dags/", 1)[-1]
                    if "/example_dags/" in n and n.endswith(".py") and not any(s in inner for s in NOT_DAGS):
                        name = f"{major}/{Path(n).name}"
                        if name in seen:  # the same file name in two wheels: say which package it came from
                            name = f"{major}/{whl.name.split('-')[0]}-{whl.name.split('-')[1]}/{Path(n).name}"
                        seen.add(name)
                        out.append(Example(name, z.read(n).decode("utf-8"), major))
    return sorted(out, key=lambda e: e.name)


# -- mutations ---------------------------------------------------------------------------------------------------
def _lines(src: str) -> list[str]:
    return src.splitlines(keepends=True)


def _offset(lines: list[str], lineno: int, col: int) -> int:
    return sum(len(x) for x in lines[: lineno - 1]) + len(lines[lineno - 1].encode()[:col].decode(errors="ignore"))


def _insert_after_imports(src: str, text: str) -> str:
    tree = ast.parse(src)
    last = 0
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            last = node.end_lineno or node.lineno
        elif last:
            break
    lines = _lines(src)
    return "".join(lines[:last]) + text + "".join(lines[last:])


def _module_level_nodes(tree: ast.Module) -> list[ast.AST]:
    """Nodes that run when the file is imported: module body, `with`/`if`/`for` blocks, and the bodies of
    @dag functions (they run when the module calls them); not plain function bodies."""
    out: list[ast.AST] = []

    def walk(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                is_dag = isinstance(child, ast.FunctionDef) and any(
                    (isinstance(d, ast.Call) and getattr(d.func, "id", "") == "dag") or getattr(d, "id", "") == "dag"
                    for d in child.decorator_list)
                if is_dag:
                    walk(child, False)
                for d in getattr(child, "decorator_list", []):
                    out.append(d)
                continue
            if not in_func:
                out.append(child)
            walk(child, in_func)

    walk(tree, False)
    return out


def _task_calls(src: str, airflow: int) -> list:
    """Classic operator tasks of the static model, with their calls."""
    from airflow_net.dagcheck.interp import Ref
    from airflow_net.dagcheck.static import analyze

    interp = analyze(ast.parse(src), airflow)
    return [t for t in interp.tasks if isinstance(t.op_ref, Ref) and t.call is not None and t.dag is not None]


def mutate(example: Example) -> list[Example]:
    """Every mutation that applies to this example, one defect each."""
    out = []
    for kind in MUTATIONS:
        try:
            src = _MUTATORS[kind](example.source, example.airflow)
        except (SyntaxError, ValueError, IndexError):
            src = None
        if src and src != example.source:
            out.append(Example(f"{example.name}#{kind}", src, example.airflow, kind, expected_code(kind, example.airflow),
                               example.support))
    return out


def _m_syntax(src: str, airflow: int) -> str | None:
    """Drop the closing parenthesis of the first multi-line call at module level (a typical cut-off)."""
    tree = ast.parse(src)
    lines = _lines(src)
    for node in _module_level_nodes(tree):
        if isinstance(node, ast.Call) and node.end_lineno and node.end_lineno > node.lineno:
            line = lines[node.end_lineno - 1]
            i = node.end_col_offset - 1
            if 0 <= i < len(line) and line[i] == ")":
                lines[node.end_lineno - 1] = line[:i] + line[i + 1:]
                new = "".join(lines)
                try:
                    ast.parse(new)
                except SyntaxError:
                    return new
    return None


def _m_missing_import(src: str, airflow: int) -> str | None:
    """Delete the import of an Airflow name that module-level code uses."""
    tree = ast.parse(src)
    used = {n.id for n in _module_level_nodes(tree) if isinstance(n, ast.Name)}
    lines = _lines(src)
    for node in tree.body:
        module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
        if (module == "airflow" or module.startswith("airflow.")) and len(node.names) == 1:
            alias = node.names[0]
            name = alias.asname or alias.name
            if name in used and alias.asname is None:
                return "".join(lines[: node.lineno - 1] + lines[node.end_lineno:])
    return None


def _m_undefined_name(src: str, airflow: int) -> str | None:
    """Misspell a variable that module-level code reads (it was assigned in the module)."""
    tree = ast.parse(src)
    assigned = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    lines = _lines(src)
    for node in _module_level_nodes(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in assigned and len(node.id) > 2:
            line = lines[node.lineno - 1]
            if line[node.col_offset:node.end_col_offset] == node.id:
                lines[node.lineno - 1] = line[:node.col_offset] + node.id + "_typo" + line[node.end_col_offset:]
                return "".join(lines)
    return None


def _m_unknown_kwarg(src: str, airflow: int) -> str | None:
    """Add a misspelled argument (`retires=2`) to the first operator of a known class."""
    from airflow_net.dagcheck.api import ApiIndex

    index = ApiIndex.load()
    lines = _lines(src)
    for task in _task_calls(src, airflow):
        info = index.class_info(task.op_ref.path, airflow)
        call = task.call
        if not info or info.get("accepts_kwargs") or call.args or call.func.end_lineno is None:
            continue
        # The argument goes right after the opening parenthesis: `Op(retires=2, task_id=...)`.
        line = lines[call.func.end_lineno - 1]
        i = call.func.end_col_offset
        if line[i:i + 1] != "(":
            continue
        sep = ", " if call.keywords else ""
        lines[call.func.end_lineno - 1] = line[:i + 1] + f"retires=2{sep}" + line[i + 1:]
        return "".join(lines)
    return None


def _m_cycle(src: str, airflow: int) -> str | None:
    """After an `a >> b` statement between two names, add `b >> a` with the same indentation."""
    tree = ast.parse(src)
    lines = _lines(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.BinOp) and isinstance(node.value.op, ast.RShift):
            left, right = node.value.left, node.value.right
            if isinstance(left, ast.Name) and isinstance(right, ast.Name) and node.lineno == node.end_lineno:
                indent = lines[node.lineno - 1][: node.col_offset]
                new = f"{indent}{right.id} >> {left.id}\n"
                return "".join(lines[: node.end_lineno] + [new] + lines[node.end_lineno:])
    return None


def _m_duplicate(src: str, airflow: int) -> str | None:
    """Give a second operator of the same DAG and group the task_id of the first."""
    lines = _lines(src)
    tasks = _task_calls(src, airflow)
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            if a.dag is not b.dag or a.group is not b.group or a.task_id is None or b.task_id is None:
                continue
            kw = next((k for k in b.call.keywords if k.arg == "task_id"), None)
            akw = next((k for k in a.call.keywords if k.arg == "task_id"), None)
            if kw is None or akw is None or not isinstance(kw.value, ast.Constant) or not isinstance(akw.value, ast.Constant):
                continue
            v = kw.value
            if v.lineno != v.end_lineno:
                continue
            line = lines[v.lineno - 1]
            lines[v.lineno - 1] = line[:v.col_offset] + repr(akw.value.value) + line[v.end_col_offset:]
            return "".join(lines)
    return None


XCOM_ID_RE = re.compile(r"""(xcom_pull\(\s*(?:task_ids\s*=\s*)?)(['"])([\w.-]+)\2""")


def _m_xcom(src: str, airflow: int) -> str | None:
    """Point an existing xcom_pull at a task id that does not exist; else template one into a bash_command."""
    m = XCOM_ID_RE.search(src)
    if m:
        return src[: m.start(3)] + m.group(3) + "_missing" + src[m.end(3):]
    lines = _lines(src)
    for task in _task_calls(src, airflow):
        kw = next((k for k in task.call.keywords if k.arg == "bash_command"), None)
        if kw is not None and isinstance(kw.value, ast.Constant) and kw.value.lineno == kw.value.end_lineno:
            v = kw.value
            line = lines[v.lineno - 1]
            new = repr("echo {{ ti.xcom_pull(task_ids='no_such_task') }}")
            lines[v.lineno - 1] = line[:v.col_offset] + new + line[v.end_col_offset:]
            return "".join(lines)
    return None


def _m_cron(src: str, airflow: int) -> str | None:
    """Make the DAG's schedule an impossible cron (hour 25), or give it one."""
    tree = ast.parse(src)
    lines = _lines(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("DAG", "dag"):
            for k in node.keywords:
                if k.arg in ("schedule", "schedule_interval") and k.value.lineno == k.value.end_lineno:
                    v = k.value
                    line = lines[v.lineno - 1]
                    lines[v.lineno - 1] = line[:v.col_offset] + '"0 25 * * *"' + line[v.end_col_offset:]
                    return "".join(lines)
    return None


def _m_orphan(src: str, airflow: int) -> str | None:
    """Create one more task at module level, outside any DAG."""
    path = "airflow.providers.standard.operators.empty" if airflow == 3 else "airflow.operators.empty"
    new = _insert_after_imports(src, f"from {path} import EmptyOperator as _OrphanOperator\n")
    return new.rstrip("\n") + "\n\norphan = _OrphanOperator(task_id=\"orphan_task\")\n"


def _m_removed_import(src: str, airflow: int) -> str | None:
    """Import from a path that the target Airflow no longer has."""
    line = ("from airflow.operators.dummy import DummyOperator\n" if airflow == 3
            else "from airflow.contrib.operators.dummy_operator import DummyOperator\n")
    return _insert_after_imports(src, line)


def _replace_schedule(src: str, expr: str, import_line: str) -> str | None:
    """Put `expr` in place of the first DAG's one-line schedule argument, and import what it needs."""
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("DAG", "dag"):
            for k in node.keywords:
                if k.arg in ("schedule", "schedule_interval") and k.value.lineno == k.value.end_lineno:
                    v = k.value
                    lines = _lines(src)
                    line = lines[v.lineno - 1]
                    lines[v.lineno - 1] = line[:v.col_offset] + expr + line[v.end_col_offset:]
                    return _insert_after_imports("".join(lines), import_line)
    return None


def _m_timetable_cron(src: str, airflow: int) -> str | None:
    """Schedule through a cron timetable with an impossible month (13): the DagBag rejects the timetable."""
    path = "airflow.sdk" if airflow == 3 else "airflow.timetables.trigger"
    return _replace_schedule(src, '_CronTT("0 0 1 13 *", timezone="UTC")',
                             f"from {path} import CronTriggerTimetable as _CronTT\n")


def _m_invalid_asset(src: str, airflow: int) -> str | None:
    """Schedule on an asset (dataset in Airflow 2) with the reserved 'airflow' URI scheme."""
    line = ("from airflow.sdk import Asset as _Asset\n" if airflow == 3
            else "from airflow.datasets import Dataset as _Asset\n")
    return _replace_schedule(src, '[_Asset("airflow://reserved/asset")]', line)


def _m_deprecated_import(src: str, airflow: int) -> str | None:
    """Import a name through a deprecated path that the target Airflow still loads (a compatibility shim in
    3, a deprecated module in 2.10)."""
    line = ("from airflow.models.dag import DAG as _ShimDAG\n" if airflow == 3
            else "from airflow.operators.dummy import DummyOperator as _ShimOperator\n")
    return _insert_after_imports(src, line)


_MUTATORS = {
    "syntax-error": _m_syntax, "missing-import": _m_missing_import, "undefined-name": _m_undefined_name,
    "unknown-kwarg": _m_unknown_kwarg, "cycle": _m_cycle, "duplicate-task-id": _m_duplicate,
    "xcom-missing-task": _m_xcom, "invalid-cron": _m_cron, "task-outside-dag": _m_orphan,
    "removed-import": _m_removed_import, "timetable-cron": _m_timetable_cron, "invalid-asset": _m_invalid_asset,
    "deprecated-import": _m_deprecated_import,
}
