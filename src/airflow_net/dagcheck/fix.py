"""Fixes dagcheck can make on its own: the imports its findings name.

- DC102 "used but not imported": the hint is the exact line Airflow's API index gives for the name
  (``Add `from X import Y```); it is added after the file's leading imports.
- DC103 "unknown import" with a replacement (an Airflow 3 path in a file for Airflow 2, ``from airflow.sdk import
  DAG`` -> ``Use `from airflow import DAG```): the name leaves the unknown import and the hinted line is added.
- DC302 a task made its own upstream (``a >> a``, ``chain(a, a)``: a small model repeats a name): the
  repeated name is dropped from that dependency statement.
- DC303 an XCom pull of a grouped task by its bare id, whose hint names the full one (``task_ids="load"`` for
  the task ``load`` inside TaskGroup ``extract``): the id on that line becomes ``extract.load``.
- DC309 an operator's task called with no arguments (``u = t()``, written as if ``t`` were a @task function):
  the call becomes the task itself (``u = t``), which is what the dependencies that use ``u`` mean. A call with
  arguments is left alone (what they were for is not known).

:func:`fix_source` then checks the result: the fixed source is returned only when it has fewer errors than the
original (never a worse file). Like ``ruff --fix`` for these five rules: deterministic, no model, no import or
run of the code.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from airflow_net.dagcheck.core import check_source
from airflow_net.dagcheck.findings import Report

_HINT = re.compile(r"^Add `((?:from [\w.]+ )?import [\w., ]+)`$")
_UNKNOWN = re.compile(r"^`from ([\w.]+) import (\w+)(?: as (\w+))?`")  # DC103's message: the import as written
_USE = re.compile(r"^Use `(from [\w.]+ import \w+)`$")
_SELF_LOOP = re.compile(r"cycle: ([\w.]+) >> \1$")
_PULLED = re.compile(r"^xcom_pull\(task_ids='([\w.\-]+)'\)")  # DC303's message
_FULL_ID = re.compile(r"^Did you mean '([\w.\-]+)' \(the full id")


def _operands(node: ast.expr, op: type) -> list[ast.expr] | None:
    """``a >> b >> c`` (one operator throughout) as [a, b, c]; None: not such a chain."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, op):
        left = _operands(node.left, op) or [node.left]
        return [*left, node.right]
    return None


def _drop_repeats(items: list[ast.expr]) -> list[ast.expr]:
    out: list[ast.expr] = []
    for item in items:
        if not out or ast.dump(item) != ast.dump(out[-1]):
            out.append(item)
    return out


def _dedupe_dependencies(source: str, tree: ast.Module) -> str:
    """Each dependency statement (``a >> b``, ``a << b``, ``chain(...)``) without a name repeated next to itself;
    statements that change are written back by ``ast.unparse`` at their own indentation."""
    lines = source.split("\n")
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Expr):
            continue
        value, new = node.value, None
        for op in (ast.RShift, ast.LShift):
            items = _operands(value, op)
            kept = _drop_repeats(items) if items else []
            if len(kept) < len(items or ()):
                new = kept[0]
                for item in kept[1:]:
                    new = ast.BinOp(left=new, op=op(), right=item)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "chain":
            kept = _drop_repeats(value.args)
            if len(kept) < len(value.args):
                new = ast.Call(func=value.func, args=kept, keywords=value.keywords)
        if new is not None and node.lineno == node.end_lineno:
            edits.append((node.lineno, node.col_offset, ast.unparse(ast.Expr(new))))
    for line, col, text in sorted(edits, reverse=True):
        lines[line - 1] = lines[line - 1][:col] + text
    return "\n".join(lines)


@dataclass
class Fixed:
    source: str
    report: Report
    added: list[str] = field(default_factory=list)  # the import lines added
    deduped: bool = False  # a task made its own upstream lost the repeat
    renamed: list[str] = field(default_factory=list)  # "line N: 'x' -> 'g.x'" for XCom pulls given the full id
    uncalled: list[str] = field(default_factory=list)  # "line N: t() -> t" for a task called like a function

    @property
    def fixes(self) -> list[str]:
        """What was done, one line each (empty: the source is unchanged)."""
        return [*self.added, *(["dropped the repeat in a task made its own upstream"] if self.deduped else []),
                *(f"XCom pull on {r}" for r in self.renamed), *(f"task called on {c}" for c in self.uncalled)]


def _insert_at(tree: ast.Module) -> int:
    """The line after the module docstring and the imports that open the file (0: the very top)."""
    line = 0
    for i, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            line = node.end_lineno or line
        else:
            break
    return line


def fix_source(source: str, *, airflow: int = 3, report: Report | None = None) -> Fixed:
    """``source`` with the fixes its findings name (module doc: DC102, DC103, DC302, DC303, DC309); unchanged when
    there are none, when it does not parse, or when they would not lower the error count.

    A fix can bring out a finding the next one fixes: with ``chain`` imported, dagcheck reads ``chain(a, a)``
    and reports the cycle it could not see before. So the fixes run again on the fixed file (at most
    ``_ROUNDS`` rounds, until a round changes nothing), and the round with the fewest errors is kept, the
    earliest of equals, if it has fewer than the original."""
    original = report or check_source(source, airflow=airflow)
    best = Fixed(source, original)
    current = best
    for _ in range(_ROUNDS):
        step = _fix_once(current.source, airflow, current.report)
        if step is None or step.source == current.source:
            break
        current = Fixed(step.source, step.report, [*current.added, *step.added], current.deduped or step.deduped,
                        [*current.renamed, *step.renamed], [*current.uncalled, *step.uncalled])
        if len(current.report.errors) < len(best.report.errors):
            best = current
    return best


_ROUNDS = 3


def _fix_once(source: str, airflow: int, report: Report) -> Fixed | None:
    """One round of the fixes the findings name; None: nothing to fix, or the file does not parse."""
    lines = [m.group(1) for f in report.errors if f.code == "DC102" and f.hint and (m := _HINT.match(f.hint))]
    moved: dict[int, set[str]] = {}  # line of an unknown import -> the names that leave it
    for f in report.errors:
        if f.code == "DC103" and f.hint and (m := _UNKNOWN.match(f.message)) and (u := _USE.match(f.hint)):
            if u.group(1).rsplit(" ", 1)[-1] != m.group(2):
                continue  # the replacement is another name: not a move
            moved.setdefault(f.line, set()).add(m.group(2))
            lines.append(u.group(1) + (f" as {m.group(3)}" if m.group(3) else ""))
    lines = list(dict.fromkeys(lines))
    self_loops = any(f.code == "DC302" and _SELF_LOOP.search(f.message) for f in report.errors)
    pulls = [(f.line, m.group(1), h.group(1)) for f in report.errors
             if f.code == "DC303" and f.line and f.hint and (m := _PULLED.match(f.message)) and (h := _FULL_ID.match(f.hint))]
    calls = {(f.line, f.col) for f in report.errors if f.code == "DC309" and f.line}
    if not lines and not self_loops and not pulls and not calls:
        return None
    try:
        tree = ast.parse(source)
        if self_loops:
            source = _dedupe_dependencies(source, tree)
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    out = source.split("\n")
    uncalled = [] if self_loops else _uncall(out, tree, calls)  # after a dedupe the positions are stale: next round
    renamed = []
    for line, bare, full in pulls:  # the same number of lines: the import lines are added after this
        if 0 < line <= len(out):
            new = re.sub(rf"""(["']){re.escape(bare)}\1""", lambda m, full=full: m.group(1) + full + m.group(1),
                         out[line - 1])
            if new != out[line - 1]:
                out[line - 1] = new
                renamed.append(f"line {line}: {bare!r} -> {full!r}")
    at = _insert_at(tree)
    for node in sorted((n for n in tree.body if isinstance(n, ast.ImportFrom) and n.lineno in moved),
                       key=lambda n: -n.lineno):  # bottom up: earlier line numbers stay right
        keep = [a for a in node.names if a.name not in moved[node.lineno]]
        new = [ast.unparse(ast.ImportFrom(module=node.module, names=keep, level=node.level))] if keep else []
        out[node.lineno - 1:node.end_lineno] = new
        if node.end_lineno <= at:
            at -= node.end_lineno - node.lineno + 1 - len(new)
    out[at:at] = lines
    fixed = "\n".join(out)
    return Fixed(fixed, check_source(fixed, airflow=airflow), lines, deduped=self_loops, renamed=renamed,
                 uncalled=uncalled)


def _uncall(out: list[str], tree: ast.Module, calls: set[tuple[int, int]]) -> list[str]:
    """Replace, in ``out`` (the source's lines), each one-line call ``t()`` with no arguments at a DC309 position by
    ``t``; the changes, one line each."""
    found = sorted(((n.lineno, n.col_offset, n.end_col_offset, n.func.id) for n in ast.walk(tree)
                    if isinstance(n, ast.Call) and (n.lineno, n.col_offset) in calls and isinstance(n.func, ast.Name)
                    and not n.args and not n.keywords and n.end_lineno == n.lineno), reverse=True)
    done = []
    for line, col, end, name in found:  # right to left: earlier columns stay right
        raw = out[line - 1].encode()  # ast's columns count UTF-8 bytes
        if raw[col:end].decode().replace(" ", "") == f"{name}()":
            out[line - 1] = (raw[:col] + name.encode() + raw[end:]).decode()
            done.append(f"line {line}: {name}() -> {name}")
    return sorted(done)
