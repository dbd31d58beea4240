"""Fixes dagcheck can make on its own: the imports its findings name.

- DC102 "used but not imported": the hint is the exact line Airflow's API index gives for the name
  (``Add `from X import Y```); it is added after the file's leading imports.
- DC103 "unknown import" with a replacement (an Airflow 3 path in a file for Airflow 2, ``from airflow.sdk import
  DAG`` -> ``Use `from airflow import DAG```): the name leaves the unknown import and the hinted line is added.
- DC302 a task made its own upstream (``a >> a``, ``chain(a, a)``: a small model repeats a name): the
  repeated name is dropped from that dependency statement. A ``chain()`` of lists that pairs a task with itself
  (``chain([a, b], [a, c])`` means ``a >> a`` and ``b >> c``) becomes the edges it means without the self-loops,
  one statement per upstream task (``b >> c``), on lines of their own.
- DC303 an XCom pull of a grouped task by its bare id, whose hint names the full one (``task_ids="load"`` for
  the task ``load`` inside TaskGroup ``extract``): the id on that line becomes ``extract.load``.
- DC309 an operator's task called with no arguments (``u = t()``, written as if ``t`` were a @task function):
  the call becomes the task itself (``u = t``), which is what the dependencies that use ``u`` mean. A call with
  arguments is left alone (what they were for is not known).

One more, only when asked (``drop_unknown=True``: what ``generate.autofix`` does to a model's answer, never
``airflow-net validate --fix`` to a person's file, where a name nothing binds is a typo to correct, not a
dependency to lose):

- DC101 in a dependency statement (``wait_for_upstream >> load``, ``chain(a, ghost, b)``, ``[a, ghost] >> b``):
  a name nothing in the file binds (no assignment, def, import or argument) is a task the model referred to
  but never wrote; it leaves that statement (an emptied list with it, and the statement when fewer than two
  operands remain). The dependencies among the tasks the file has stay.

:func:`fix_source` then checks the result: the fixed source is returned only when it has fewer errors than the
original (never a worse file). Like ``ruff --fix`` for these rules: deterministic, no model, no import or
run of the code.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_net.dagcheck.core import check_source
from airflow_net.dagcheck.findings import Report

_HINT = re.compile(r"^Add `((?:from [\w.]+ )?import [\w., ]+)`$")
_UNKNOWN = re.compile(r"^`from ([\w.]+) import (\w+)(?: as (\w+))?`")  # DC103's message: the import as written
_USE = re.compile(r"^Use `(from [\w.]+ import \w+)`$")
_SELF_LOOP = re.compile(r"cycle: ([\w.]+) >> \1$")
_PULLED = re.compile(r"^xcom_pull\(task_ids='([\w.\-]+)'\)")  # DC303's message
_FULL_ID = re.compile(r"^Did you mean '([\w.\-]+)' \(the full id")
_UNDEFINED = re.compile(r"^undefined name '(\w+)' \(NameError when Airflow parses")  # DC101's, at module level


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


def _dependency(value: ast.expr) -> tuple[list[ast.expr], Callable[[list[ast.expr]], ast.expr]] | None:
    """A dependency statement's operands (``a >> b >> c``, ``a << b``, ``chain(a, b)``) and how to write the
    statement again with other operands; None: not one."""
    for op in (ast.RShift, ast.LShift):
        if (items := _operands(value, op)) is not None:
            return items, lambda kept, op=op: functools.reduce(lambda a, b: ast.BinOp(left=a, op=op(), right=b), kept)
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "chain":
        return value.args, lambda kept: ast.Call(func=value.func, args=kept, keywords=value.keywords)
    return None


def _dedupe_dependencies(source: str, tree: ast.Module) -> str:
    """Each dependency statement (``a >> b``, ``a << b``, ``chain(...)``) without a name repeated next to itself;
    statements that change are written back by ``ast.unparse`` at their own indentation."""
    lines = source.split("\n")
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Expr) or (dep := _dependency(node.value)) is None or node.lineno != node.end_lineno:
            continue
        items, rebuild = dep
        kept = _drop_repeats(items)
        if isinstance(node.value, ast.Call) and (pairs := _chain_edges(kept)) and any(a == b for a, b in pairs):
            # `chain([a, b], [a, c])` pairs a with a: the edges it means, each once, without the self-loops
            edits.append((node.lineno, node.col_offset, _edges_text(pairs, node.col_offset)))
        elif len(kept) < len(items):
            edits.append((node.lineno, node.col_offset, ast.unparse(ast.Expr(rebuild(kept)))))
    for line, col, text in sorted(edits, reverse=True):
        lines[line - 1] = lines[line - 1][:col] + text
    return "\n".join(lines)


def _chain_edges(args: list[ast.expr]) -> list[tuple[str, str]] | None:
    """The (upstream, downstream) pairs ``chain(*args)`` makes, as Airflow's ``chain`` does (a list next to a
    task: each of its tasks; two lists: pairwise, of equal length), in order; None: not names and lists of names
    only (anything else, or lists of unequal length, is left alone)."""
    items: list[list[str] | str] = []
    for arg in args:
        if isinstance(arg, ast.Name):
            items.append(arg.id)
        elif isinstance(arg, (ast.List, ast.Tuple)) and arg.elts and all(isinstance(e, ast.Name) for e in arg.elts):
            items.append([e.id for e in arg.elts])  # type: ignore[attr-defined]
        else:
            return None
    pairs: list[tuple[str, str]] = []
    for up, down in zip(items, items[1:], strict=False):
        if isinstance(up, list) and isinstance(down, list):
            if len(up) != len(down):
                return None
            pairs += list(zip(up, down, strict=True))
        else:
            pairs += [(u, d) for u in (up if isinstance(up, list) else [up]) for d in (down if isinstance(down, list) else [down])]
    return list(dict.fromkeys(pairs))


def _edges_text(pairs: list[tuple[str, str]], indent: int) -> str:
    """Statements for ``pairs`` without self-loops, one per upstream in first-seen order (``a >> [b, c]``), on
    lines of their own at ``indent``; ``pass`` when nothing is left (a block must hold a statement)."""
    downs: dict[str, list[str]] = {}
    for up, down in pairs:
        if up != down:
            downs.setdefault(up, []).append(down)
    text = [f"{up} >> {ds[0]}" if len(ds) == 1 else f"{up} >> [{', '.join(ds)}]" for up, ds in downs.items()]
    return ("\n" + " " * indent).join(text or ["pass"])


def _bound(tree: ast.Module) -> set[str]:
    """Every name the module binds anywhere: assigned, deleted, defined, imported, an argument."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
    return out


def _without(node: ast.expr, names: set[str]) -> ast.expr | None:
    """``node`` (a dependency operand: a name, or a list/tuple of them) without ``names``; None: nothing left."""
    if isinstance(node, ast.Name):
        return None if node.id in names else node
    if isinstance(node, (ast.List, ast.Tuple)):
        kept = [e for e in (_without(x, names) for x in node.elts) if e is not None]
        return type(node)(elts=kept, ctx=ast.Load()) if kept else None
    return node


def _drop_unknown(source: str, tree: ast.Module, names: set[str]) -> tuple[str, list[str]]:
    """Each one-line dependency statement without ``names`` (module doc); the changes, one line each."""
    lines = source.split("\n")
    edits: list[tuple[int, int, str | None]] = []
    done: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Expr) or (dep := _dependency(node.value)) is None or node.lineno != node.end_lineno:
            continue
        if isinstance(node.value, ast.Call) and (node.value.keywords
                                                 or any(isinstance(a, ast.Starred) for a in node.value.args)):
            continue  # chain(*tasks), chain(..., key=...): what it means is not plain operands
        items, rebuild = dep
        kept = [k for k in (_without(i, names) for i in items) if k is not None]
        if ast.dump(ast.List(elts=kept, ctx=ast.Load())) == ast.dump(ast.List(elts=items, ctx=ast.Load())):
            continue
        gone = sorted({n.id for i in items for n in ast.walk(i) if isinstance(n, ast.Name) and n.id in names})
        edits.append((node.lineno, node.col_offset, ast.unparse(ast.Expr(rebuild(kept))) if len(kept) >= 2 else None))
        done.append((node.lineno, f"line {node.lineno}: dropped {', '.join(map(repr, gone))}"
                    + ("" if len(kept) >= 2 else " (the statement with it: fewer than two tasks left)")))
    for line, col, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[line - 1] = lines[line - 1][:col] + text if text is not None else ""  # blank: line numbers stay
    return "\n".join(lines), [text for _, text in sorted(done)]


@dataclass
class Fixed:
    source: str
    report: Report
    added: list[str] = field(default_factory=list)  # the import lines added
    deduped: bool = False  # a task made its own upstream lost the repeat
    renamed: list[str] = field(default_factory=list)  # "line N: 'x' -> 'g.x'" for XCom pulls given the full id
    uncalled: list[str] = field(default_factory=list)  # "line N: t() -> t" for a task called like a function
    dropped: list[str] = field(default_factory=list)  # "line N: dropped 'x'": a name nothing binds, from a dependency

    @property
    def fixes(self) -> list[str]:
        """What was done, one line each (empty: the source is unchanged)."""
        return [*self.added, *(["dropped the repeat in a task made its own upstream"] if self.deduped else []),
                *(f"XCom pull on {r}" for r in self.renamed), *(f"task called on {c}" for c in self.uncalled),
                *(f"unknown task in a dependency on {d}" for d in self.dropped)]


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


def fix_source(source: str, *, airflow: int = 3, report: Report | None = None, drop_unknown: bool = False) -> Fixed:
    """``source`` with the fixes its findings name (module doc: DC102, DC103, DC302, DC303, DC309, and with
    ``drop_unknown`` DC101 in a dependency); unchanged when there are none, when it does not parse, or when they
    would not lower the error count.

    A fix can bring out a finding the next one fixes: with ``chain`` imported, dagcheck reads ``chain(a, a)``
    and reports the cycle it could not see before. So the fixes run again on the fixed file (at most
    ``_ROUNDS`` rounds, until a round changes nothing), and the round with the fewest errors is kept, the
    earliest of equals, if it has fewer than the original."""
    original = report or check_source(source, airflow=airflow)
    best = Fixed(source, original)
    current = best
    for _ in range(_ROUNDS):
        step = _fix_once(current.source, airflow, current.report, drop_unknown)
        if step is None or step.source == current.source:
            break
        current = Fixed(step.source, step.report, [*current.added, *step.added], current.deduped or step.deduped,
                        [*current.renamed, *step.renamed], [*current.uncalled, *step.uncalled],
                        [*current.dropped, *step.dropped])
        if len(current.report.errors) < len(best.report.errors):
            best = current
    return best


_ROUNDS = 3


def _fix_once(source: str, airflow: int, report: Report, drop_unknown: bool = False) -> Fixed | None:
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
    unknown = {m.group(1) for f in report.errors if drop_unknown and f.code == "DC101" and (m := _UNDEFINED.match(f.message))}
    if not lines and not self_loops and not pulls and not calls and not unknown:
        return None
    dropped: list[str] = []
    try:
        tree = ast.parse(source)
        if self_loops:
            source = _dedupe_dependencies(source, tree)
            tree = ast.parse(source)
        elif unknown - _bound(tree):  # before the line-based fixes below; a dedupe first moves columns: next round
            source, dropped = _drop_unknown(source, tree, unknown - _bound(tree))
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    out = source.split("\n")
    uncalled = [] if self_loops or dropped else _uncall(out, tree, calls)  # after a rewrite the positions are
    # stale: next round
    renamed = []
    for line, bare, full in [] if self_loops else pulls:  # a chain written out adds lines: next round
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
                 uncalled=uncalled, dropped=dropped)


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
