"""One pass over the AST: undefined names, and the facts the other static checks need.

Undefined names come from a small scope analysis (module, class, function, lambda, comprehension). Only
"never bound anywhere in reach" is reported, like pyflakes' undefined-name, so that conditional
definitions and definitions later in the module never raise a false alarm.

The same pass records the imports (and whether each is inside a function or a try/except ImportError),
the calls and the strings that mention xcom_pull, so no other check walks the tree again: the static
tiers aim at more than a thousand files per second on one core.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from dataclasses import dataclass, field

BUILTIN_NAMES = frozenset(dir(builtins)) | {
    "__file__", "__name__", "__doc__", "__builtins__", "__spec__", "__loader__", "__package__", "__path__",
    "__annotations__", "__cached__", "__class__", "__debug__", "__dict__", "__module__", "__qualname__",
}


@dataclass(eq=False)
class Scope:
    kind: str  # module | class | function | comprehension
    parent: Scope | None
    bindings: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)
    star_import: bool = False


@dataclass
class UndefinedName:
    name: str
    line: int
    col: int
    in_function: bool  # inside a function body: fails when the task runs, not when the file is parsed
    before: bool = False  # bound at module level, but only by a later statement (read before it runs)


_GUARD_NAMES = ("ImportError", "ModuleNotFoundError", "Exception", "BaseException")
# Child fields worth visiting, per node type (expression contexts and type-ignore lists never hold names).
_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    f = _FIELDS.get(cls)
    if f is None:
        f = _FIELDS[cls] = tuple(x for x in cls._fields if x not in ("ctx", "type_ignores", "type_comment"))
    return f


class NameAnalyzer:
    def __init__(self) -> None:
        self.module = Scope("module", None)
        self.scope = self.module
        self.loads: list[tuple[str, ast.AST, Scope]] = []
        self.future_annotations = False
        # facts for the other checks
        self.imports: list[tuple[ast.Import | ast.ImportFrom, bool, bool]] = []  # node, in function, guarded
        self.calls: list[ast.Call] = []
        self.xcom_strings: list[ast.Constant] = []
        self._guarded = 0
        # imports inside an `except ImportError:` block: id(import) -> (the try statement, handler index)
        self.handler_imports: dict[int, tuple[ast.Try, int]] = {}
        self._handlers: list[tuple[ast.Try, int]] = []
        self._func_depth = 0
        self._dispatch = _dispatch_table(type(self))

    # -- traversal --------------------------------------------------------------------------------------------
    def visit(self, node: ast.AST) -> None:
        fn = self._dispatch.get(type(node))
        if fn is not None:
            fn(self, node)
        else:
            self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        # The dispatch is inlined here: this loop runs once per node of every checked file.
        dispatch = self._dispatch
        generic = self.generic_visit
        AST = ast.AST
        for name in _FIELDS.get(type(node)) or _fields(type(node)):
            v = getattr(node, name, None)
            if type(v) is list:
                for x in v:
                    if isinstance(x, AST):
                        fn = dispatch.get(type(x))
                        if fn is not None:
                            fn(self, x)
                        else:
                            generic(x)
            elif isinstance(v, AST):
                fn = dispatch.get(type(v))
                if fn is not None:
                    fn(self, v)
                else:
                    generic(v)

    def visit_Call(self, node: ast.Call) -> None:
        self.calls.append(node)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if type(node.value) is str and "xcom_pull" in node.value:
            self.xcom_strings.append(node)

    def visit_Try(self, node: ast.Try) -> None:
        guard = any(h.type is None or any(isinstance(n, ast.Name) and n.id in _GUARD_NAMES for n in ast.walk(h.type))
                    for h in node.handlers)
        self._guarded += guard
        for stmt in node.body:
            self.visit(stmt)
        self._guarded -= guard
        for i, h in enumerate(node.handlers):
            self._handlers.append((node, i))
            self.visit(h)
            self._handlers.pop()
        for part in (node.orelse, node.finalbody):
            for stmt in part:
                self.visit(stmt)

    # -- scopes -----------------------------------------------------------------------------------------
    def _bind(self, name: str) -> None:
        scope = self.module if name in self.scope.globals else self.scope
        scope.bindings.add(name)

    def _push(self, kind: str) -> Scope:
        self.scope = Scope(kind, self.scope)
        return self.scope

    def _pop(self) -> None:
        assert self.scope.parent is not None
        self.scope = self.scope.parent

    def analyze(self, tree: ast.Module) -> list[UndefinedName]:
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                self.future_annotations |= any(a.name == "annotations" for a in node.names)
        self.visit(tree)
        return self._resolve()

    def _resolve(self) -> list[UndefinedName]:
        out = []
        for name, node, scope in self.loads:
            if name in BUILTIN_NAMES:
                continue
            s: Scope | None = scope
            found = False
            first = True
            while s is not None:
                if s.star_import:
                    found = True
                    break
                if name in s.globals:
                    s = self.module
                    found = name in s.bindings or s.star_import
                    break
                # A class body's names are not visible from the functions nested in it.
                if (first or s.kind != "class") and name in s.bindings:
                    found = True
                    break
                first = False
                s = s.parent
            if not found:
                in_function = False
                s = scope
                while s is not None:
                    in_function |= s.kind == "function"
                    s = s.parent
                out.append(UndefinedName(name, getattr(node, "lineno", 0), getattr(node, "col_offset", 0), in_function))
        return out

    # -- bindings and loads -------------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.loads.append((node.id, node, self.scope))
        else:
            self._bind(node.id)

    def visit_Global(self, node: ast.Global) -> None:
        self.scope.globals.update(node.names)
        self.module.bindings.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        # The name lives in an enclosing function: bind it here too, so loads resolve.
        self.scope.bindings.update(node.names)

    def visit_Import(self, node: ast.Import) -> None:
        self.imports.append((node, self._func_depth > 0, self._guarded > 0))
        if self._handlers:
            self.handler_imports[id(node)] = self._handlers[-1]
        for alias in node.names:
            self._bind(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.imports.append((node, self._func_depth > 0, self._guarded > 0))
        if self._handlers:
            self.handler_imports[id(node)] = self._handlers[-1]
        for alias in node.names:
            if alias.name == "*":
                self.scope.star_import = True
            else:
                self._bind(alias.asname or alias.name)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._bind(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self._bind(node.name)
        if node.pattern is not None:
            self.visit(node.pattern)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self._bind(node.rest)
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        # An assignment expression in a comprehension binds in the enclosing function or module.
        scope = self.scope
        while scope.kind == "comprehension" and scope.parent is not None:
            scope = scope.parent
        scope.bindings.add(node.target.id)

    # -- definitions ---------------------------------------------------------------------------------------
    def _visit_annotation(self, node: ast.AST | None) -> None:
        # With `from __future__ import annotations` (or a string) an annotation is never evaluated.
        if node is not None and not self.future_annotations and not isinstance(node, ast.Constant):
            self.visit(node)

    def _visit_arguments_outer(self, args: ast.arguments) -> None:
        for d in args.defaults:
            self.visit(d)
        for d in args.kw_defaults:
            if d is not None:
                self.visit(d)

    def _bind_arguments(self, args: ast.arguments) -> None:
        all_args = [*args.posonlyargs, *args.args, *args.kwonlyargs]
        if args.vararg:
            all_args.append(args.vararg)
        if args.kwarg:
            all_args.append(args.kwarg)
        for a in all_args:
            self.scope.bindings.add(a.arg)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        self._visit_arguments_outer(node.args)
        for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs, node.args.vararg, node.args.kwarg]:
            if a is not None:
                self._visit_annotation(a.annotation)
        self._visit_annotation(node.returns)
        self._bind(node.name)
        self._push("function")
        self._bind_arguments(node.args)
        self._func_depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self._func_depth -= 1
        self._pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_arguments_outer(node.args)
        self._push("function")
        self._bind_arguments(node.args)
        self.visit(node.body)
        self._pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        for b in node.bases:
            self.visit(b)
        for k in node.keywords:
            self.visit(k.value)
        self._bind(node.name)
        self._push("class")
        for stmt in node.body:
            self.visit(stmt)
        self._pop()

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.target)
        # Module- and class-level variable annotations are evaluated (unless postponed); local ones never.
        if self.scope.kind != "function":
            self._visit_annotation(node.annotation)

    def _visit_comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        gens = node.generators
        # The first iterable is evaluated in the enclosing scope.
        self.visit(gens[0].iter)
        self._push("comprehension")
        for i, gen in enumerate(gens):
            if i:
                self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        if isinstance(node, ast.DictComp):
            self.visit(node.key)
            self.visit(node.value)
        else:
            self.visit(node.elt)
        self._pop()

    visit_ListComp = _visit_comprehension
    visit_SetComp = _visit_comprehension
    visit_GeneratorExp = _visit_comprehension
    visit_DictComp = _visit_comprehension


_DISPATCH: dict[type, dict[type, object]] = {}


def _dispatch_table(cls: type) -> dict[type, object]:
    """Node type -> unbound visitor method, built once per class."""
    table = _DISPATCH.get(cls)
    if table is None:
        names = {
            ast.Name: "visit_Name", ast.Global: "visit_Global", ast.Nonlocal: "visit_Nonlocal",
            ast.Import: "visit_Import", ast.ImportFrom: "visit_ImportFrom", ast.ExceptHandler: "visit_ExceptHandler",
            ast.MatchAs: "visit_MatchAs", ast.MatchStar: "visit_MatchStar", ast.MatchMapping: "visit_MatchMapping",
            ast.NamedExpr: "visit_NamedExpr", ast.FunctionDef: "_visit_function",
            ast.AsyncFunctionDef: "_visit_function", ast.Lambda: "visit_Lambda", ast.ClassDef: "visit_ClassDef",
            ast.AnnAssign: "visit_AnnAssign", ast.ListComp: "_visit_comprehension",
            ast.SetComp: "_visit_comprehension", ast.GeneratorExp: "_visit_comprehension",
            ast.DictComp: "_visit_comprehension", ast.Call: "visit_Call", ast.Constant: "visit_Constant",
            ast.Try: "visit_Try",
        }
        if hasattr(ast, "TryStar"):
            names[ast.TryStar] = "visit_Try"
        table = _DISPATCH[cls] = {t: getattr(cls, m) for t, m in names.items()}
    return table


def undefined_names(tree: ast.Module) -> list[UndefinedName]:
    return NameAnalyzer().analyze(tree)


def scan(tree: ast.Module) -> tuple[list[UndefinedName], NameAnalyzer]:
    """Undefined names (never bound in reach, then read before the statement that binds them) and the collected
    facts."""
    a = NameAnalyzer()
    undefined = a.analyze(tree)
    known = {u.name for u in undefined if not u.in_function}
    return undefined + [u for u in used_before_bound(tree) if u.name not in known], a


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def _straight(stmts: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that run one after the other as the module is imported: its own, and those of the
    ``with`` blocks among them (a ``with`` runs its body once, unconditionally), in order."""
    for stmt in stmts:
        yield stmt
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            yield from _straight(stmt.body)


def _read_now(stmt: ast.stmt) -> list[ast.Name]:
    """The names ``stmt`` reads as it runs: not in a function's or lambda's body, a class body, or a nested
    block (a ``with``'s body is its own statements: :func:`_straight`); a comprehension's own variables left
    out. A branch, loop or try reads nothing here (it may not run)."""
    if isinstance(stmt, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.Match, ast.Global, ast.Nonlocal,
                         ast.Import, ast.ImportFrom)) or (hasattr(ast, "TryStar") and isinstance(stmt, ast.TryStar)):
        return []
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        roots: list[ast.AST] = [*stmt.decorator_list, *stmt.args.defaults, *(d for d in stmt.args.kw_defaults if d)]
    elif isinstance(stmt, ast.ClassDef):
        roots = [*stmt.decorator_list, *stmt.bases, *stmt.keywords]
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        roots = [item.context_expr for item in stmt.items]
    elif isinstance(stmt, ast.AnnAssign):
        roots = [stmt.value] if stmt.value is not None else []  # the annotation: not always evaluated
    else:
        roots = [stmt]
    out: list[ast.Name] = []
    local: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if isinstance(node, _SCOPES):
            if isinstance(node, ast.Lambda):
                todo += [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
            continue
        if isinstance(node, _COMPREHENSIONS):
            local |= {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return sorted((n for n in out if n.id not in local), key=lambda n: (n.lineno, n.col_offset))


def _binds(stmt: ast.stmt) -> set[str]:
    """The module-level names ``stmt`` binds, anywhere in it (a branch's too), not in a nested scope; a ``with``'s
    own (``as x``: its body is statements of their own, :func:`_straight`)."""
    out: set[str] = set()
    todo: list[ast.AST] = [i.optional_vars for i in stmt.items if i.optional_vars is not None] if isinstance(
        stmt, (ast.With, ast.AsyncWith)) else [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            if node is not stmt:
                continue
            todo += node.decorator_list
            continue
        if isinstance(node, ast.Lambda) or isinstance(node, _COMPREHENSIONS):
            out |= {n.target.id for n in ast.walk(node) if isinstance(n, ast.NamedExpr)}
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            out.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            out.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            out.add(node.rest)
        todo.extend(ast.iter_child_nodes(node))
    return out


def used_before_bound(tree: ast.Module) -> list[UndefinedName]:
    """Names the module's straight-line code reads before any statement binds them, while a later statement
    does (``store >> parse`` one line above ``store = PythonOperator(...)``): a NameError when Airflow parses the
    file, which "bound somewhere in reach" cannot see. Only code that surely runs, in order, is read (see
    :func:`_straight`, :func:`_read_now`); a ``global`` or a star import anywhere turns the check off."""
    if any(isinstance(n, ast.Global) or (isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names))
           for n in ast.walk(tree)):
        return []
    steps = list(_straight(tree.body))
    binds = [_binds(s) for s in steps]
    later = set().union(*binds)
    bound: set[str] = set()
    out: list[UndefinedName] = []
    seen: set[str] = set()
    for stmt, names in zip(steps, binds, strict=True):
        for node in _read_now(stmt):
            if node.id not in bound and node.id in later and node.id not in BUILTIN_NAMES and node.id not in seen:
                seen.add(node.id)
                out.append(UndefinedName(node.id, node.lineno, node.col_offset, False, before=True))
        bound |= names
    return out
