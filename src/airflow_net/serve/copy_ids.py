"""Identifiers copied from the request, and the other rules a DAG file's text must keep: decoding constraints.

A small model writes the shape of a DAG well but invents its identifiers (issue 16: the tiny default used the
requested dag id 10% of the time). When a request names its ids, the answer's id strings should be those ids.
While the model writes one of the places where Airflow reads an id (``dag_id="...``, ``task_id="...``,
``group_id="...``, ``DAG("...``, ``TaskGroup("...``, and the function name after ``@dag``/``@task``), only tokens
that keep the text on the way to one of the request's identifiers (and then the closing quote or parenthesis)
are allowed; everywhere else the model decodes freely. Among the allowed tokens the model's own scores decide,
so it still chooses *which* of the request's ids goes where. An id already written in an earlier place is not
offered again (two tasks with one id is an error Airflow reports); once every one is used, the place is free.
An XCom pull's ``task_ids="...`` takes any of the request's task ids, written or still to come (a pull from a
task the file does not have, DC303, was in 25 of the 300 generate answers after autofix; with this, none).

The same per-request constraint keeps the rules that make the rest of the file load, each measured on the
fine-tuned tiny model (README, "What the decoder keeps"):

- a request that names tasks but no task group gets no group (an invented group renames its tasks);
- brackets stay balanced outside strings and comments, and the answer does not end inside one
  (:class:`BracketGuard`), nor with its code block empty (:func:`_empty_code`);
- ``python_callable=`` names a function the file defined, ``>>``/``chain()`` name tasks it assigned, and a
  value the DAG's body assigns from a lower-case name calls one defined above it (:class:`NameGuard`);
- a request with a Python task (``@task``, TaskFlow, a python callable) gets a function defined before the DAG:
  the first top-level block after the imports starts with ``def`` (:meth:`IdConstraint._def_due`).

The constraint is a mask over the vocabulary, built from the tokens' text: no grammar engine, any tokenizer.
A place the request has no id for (the model started a name that is not a prefix of any) is left alone.
"""

from __future__ import annotations

import bisect
import builtins
import itertools
import keyword
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

# An identifier as a person writes it in a request: `backticked`, or a bare snake_case / digit-bearing word
# (a plain word such as "extract" is only taken when backticked: too many English words look like ids).
# a grouped task written bare, the way a person writes it: `extract.export_trips` (the task part snake_case, so
# that prose such as "e.g" or a host name is not one). On the 376 person-style and describer-written requests of
# the 188 test DAGs, every one found is a requested task.
_DOTTED = re.compile(r"(?<![\w.\-/`])([A-Za-z_]\w*\.[A-Za-z_][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+)(?![\w\-/`]|\.\w)")
_BACKTICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_.\-]*)`")
_SNAKE = re.compile(r"(?<![A-Za-z0-9_.\-/])([A-Za-z_][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+)(?![A-Za-z0-9_\-/]|\.\w)")

# The places Airflow reads an id from, and which kind of id each takes: the `k` (keyword), `c` (constructor) or
# `d` (decorator) group says dag, task or group (`task_ids`, an XCom pull's: "pull").
_PLACE = r"""(?:\b(?P<k>dag_id|task_ids?|group_id)\s*=\s*|\b(?P<c>DAG|TaskGroup)\(\s*)"""
_DECORATED_DEF = r"(?:^|\n)[ \t]*@(?P<d>dag|task)\b[^\n]*\n(?:[ \t]*@[^\n]*\n)*[ \t]*def"
_DECORATED = _DECORATED_DEF + r"[ \t]+"
# The end of the answer so far, inside a place: (kind, quote, partial id).
_OPEN_STRING = re.compile(_PLACE + r"""(?P<q>["'])(?P<p>[A-Za-z0-9_.\-]*)$""")
_OPEN_DEF = re.compile(_DECORATED + r"(?P<p>[A-Za-z0-9_]*)$")
# Just before an id string opens: a token that starts with the quote may carry the id's first characters.
_BEFORE_STRING = re.compile(_PLACE + "$")
_BEFORE_DEF = re.compile(_DECORATED_DEF + "$")  # `def` written, its space not yet: " name(" must follow
# What may follow the closing quote inside the same token: the punctuation that ends an argument.
_AFTER_CLOSE = re.compile(r"^[\s,):]*$")
# A whole place inside the text (to check one that a single token opened and closed at once, and the ids used).
_CLOSED_STRING = re.compile(_PLACE + r"""(?P<q>["'])(?P<p>[^"'\n]*)(?P=q)""")
_CLOSED_DEF = re.compile(_DECORATED + r"(?P<p>[A-Za-z0-9_]+)\(")
_TAIL = 400  # characters of the answer looked at: a place is short
CANDIDATES = 64  # best-scored tokens tried, in order, before falling back to the allowed set
ROLES = ("dag", "group", "task")
# Words just before an id that say what it names ("a DAG called `x`", "TaskGroup `x`"), or just after it
# ("`x` as the DAG id"): the request's grammar, as the describer, the noiser and people write it.
_DAG_BEFORE = re.compile(
    r"\b(?:(?:dag|pipeline|workflow)(?:\s+(?:called|named|id))?(?:\s+(?:should be|is|will be))?"
    r"|(?:dag|pipeline)\s+for\s+airflow\s*[\d.x]+,|with\s+the\s+(?:dag\s+)?id|name it|call it|called|named"
    r"|create|build|write|make)\s*[`\"']?$", re.I)
_DAG_AFTER = re.compile(
    r"^[`\"']?\s*(?:(?:,|\(|:)?\s*(?:an?\s+)?(?:airflow\s*[\d.x]+\)?:?\s*)?(?:a\s+)?dag\b|as\s+(?:the\s+)?dag)", re.I)
_GROUP_BEFORE = re.compile(r"\b(?:task ?groups?|groups?)\b[^.;:\n]{0,12}$|\bgroup_id\s*[=:]?\s*$", re.I)
_GROUP_VERB = re.compile(r"(?:^|[.!?:;]\s+)group\s*$", re.I)  # "Group `a` and `b` under ...": the verb
_GROUP_AFTER = re.compile(r"^`?\s*(?:task ?group|taskgroup)\b", re.I)  # "belong in the `x` task group"
# A task the request puts in a group: `group.task`, "`task` (in group `g`)", or a sentence that names one group
# (as a group) and the tasks in it: "Put `a` and `b` in a TaskGroup called `g`", "`a` belongs in the `g` task
# group". The describer's, the noiser's and the canonical grammar's ways; on the test split's requests with
# groups this finds the group of every task the canonical and terse ones group, and no wrong one.
_IN_GROUP = re.compile(r"`?(\w+)`?\s*\((?:in|inside|part of)\s+(?:the\s+)?(?:task\s?)?group\s+`?(\w+)`?\)", re.I)
_CLAUSES = re.compile(r"(?<=[.;!?])\s+|\n")
# Words just before an id that say it names no task: an owner, a tag (in a list of tags), a python callable, a
# connection, another DAG ("ExternalTaskSensor on the `x` DAG"). The describer writes half of its detailed
# requests' backticked ids this way; offered as task ids, they became tasks.
_NOT_A_TASK_BEFORE = re.compile(
    r"(?:\bowners?\b[^.;\n]{0,12}|\btag(?:s|ged)?\b(?:\s+it)?[^.;\n]{0,60}|\bcalling|\bon\s+the"
    r"|\bconn(?:ection)?(?:_id)?\b[^.;\n]{0,12}|\bpool\b|\bbucket\b)\s*[:=]?\s*$", re.I)
# Where a task group is opened in code: an indented ``with`` (inside the DAG a ``with`` opens a group; the DAG's
# own is at the left margin), the constructor called, or the decorator. Stopped at ``with``, the model writes a
# task there instead; stopped later, it would have to make ``with TaskGroup`` mean something else. A request
# that names its ids but no group gets none.
_GROUP_OPENED = re.compile(r"(?:\n[ \t]+with\b|\bTaskGroup[ \t]*\(|@task_group\b)")


_TG_CALL = r"""TaskGroup\([ \t]*(?:group_id[ \t]*=[ \t]*)?["'](?P<g>[\w.\-]+)["']"""  # a group opened, its id
_TG_WITH = re.compile(r"(?m)^(?P<ind>[ \t]*)with[ \t]+" + _TG_CALL)
_TG_ANY = re.compile(_TG_CALL)


_STRINGS = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


def _statement_indent(head: str) -> int | None:
    """The indentation the next statement may go up to: the last statement's own (found by walking back over
    the lines its brackets span), or None (no bound: it opened a block with ``:``, or none was found)."""
    lines = head.split("\n")[:-1]
    last = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].strip()), None)
    if last is None:
        return None
    code = _STRINGS.sub("", lines[last]).split("#", 1)[0].rstrip()
    if code.endswith(":"):
        return None
    depth = 0
    for i in range(last, max(-1, last - 60), -1):
        text = _STRINGS.sub("", lines[i]).split("#", 1)[0]
        depth += sum(text.count(c) for c in ")]}") - sum(text.count(c) for c in "([{")
        if depth <= 0:
            return len(lines[i]) - len(lines[i].lstrip(" \t"))
    return None


# a statement's assignment, `    v = ...` (a keyword argument's line inside a call is `k=v`, no spaces: black's)
_REASSIGN = re.compile(r"(?m)^(?: {4}| {8})(?P<v>[A-Za-z_]\w*) +=(?!=)")


def _body_assigned(head: str) -> set[str]:
    """The names the DAG's body (and the group blocks in it) assigned in ``head``."""
    opened = _DAG_OPENED.search(head)
    return {m.group("v") for m in _REASSIGN.finditer(head, opened.end())} if opened else set()


def _assignable(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and name not in _PY_WORDS


def _used_ids(text: str) -> set[str]:
    """The ids every closed place in ``text`` holds."""
    return {m.group("p") for rx in (_CLOSED_STRING, _CLOSED_DEF) for m in rx.finditer(text) if _kind(m) != "pull"}


def _last_line(text: str) -> tuple[str, str, int] | None:
    """(the text up to its last line, that line, the line's indentation); None: one line only."""
    k = text.rfind("\n")
    if k < 0:
        return None
    line = text[k + 1:]
    return text[: k + 1], line, len(line) - len(line.lstrip(" \t"))


def _last_with(text: str) -> re.Match | None:
    """The last ``with TaskGroup("g")`` line in ``text``."""
    return next(reversed(list(_TG_WITH.finditer(text))), None)


def _group_block(answer: str) -> str | None:
    """The group whose ``with TaskGroup`` block the answer's current line is in; None: outside every one
    (a later line at or left of the ``with`` ended it; a line with nothing on it yet is still inside)."""
    m = _last_with(answer)
    if m is None:
        return None
    indent = len(m.group("ind"))
    for line in answer[m.end():].split("\n")[1:]:
        if line.strip() and len(line) - len(line.lstrip(" \t")) <= indent and not line.lstrip().startswith((")", "]", "}", "#")):
            return None
    return m.group("g")


def _kind(m: re.Match) -> str:
    word = (m.groupdict().get("k") or m.groupdict().get("c") or m.groupdict().get("d") or "").lower()
    if word == "task_ids":
        return "pull"
    return "dag" if word.startswith("dag") else "group" if "group" in word else "task"


def _occurrences(text: str) -> list[tuple[int, int, str]]:
    spans = [(m.start(1), m.end(1), m.group(1)) for m in _BACKTICKED.finditer(text)]
    if len(spans) >= 2:  # a request that quotes its ids quotes all of them: bare words are prose ("pg_dump")
        return spans
    taken = [(a - 1, b + 1) for a, b, _ in spans]
    spans += [(m.start(1), m.end(1), m.group(1)) for rx in (_SNAKE, _DOTTED) for m in rx.finditer(text)
              if not any(a <= m.start(1) < b for a, b in taken)]
    return sorted(spans)


def request_identifiers(text: str) -> tuple[str, ...]:
    """The identifiers a request names, in order of first appearance (``group.task`` also gives ``task``)."""
    out: list[str] = []
    for _, _, ident in _occurrences(text):
        for part in (ident, ident.rsplit(".", 1)[-1]):
            if part and part not in out:
                out.append(part)
    return tuple(out)


def _canonical_roles(text: str) -> tuple[str, ...] | None:
    """A canonical request's ids, tagged (it says exactly what each id names); None: not a canonical request."""
    from airflow_net.data.canonical import CanonicalError, parse_canonical

    try:
        c = parse_canonical(text)
    except CanonicalError:
        return None
    tasks = [t.rsplit(".", 1)[-1] for t in c.tasks]
    return tuple(dict.fromkeys([f"dag:{c.dag_id}", *(f"group:{g}" for g in c.groups), *(f"task:{t}" for t in tasks)]))


def request_group_members(text: str, groups: Sequence[str], tasks: Sequence[str]) -> dict[str, str]:
    """{task id: group id} for the tasks the request puts in one of ``groups`` (see ``_IN_GROUP``)."""
    out: dict[str, str] = {}
    known = set(tasks)
    for g in groups:
        for m in re.finditer(rf"(?<![\w.]){re.escape(g)}\.(\w+)", text):
            if m.group(1) in known:
                out.setdefault(m.group(1), g)
    for m in _IN_GROUP.finditer(text):
        if m.group(1) in known and m.group(2) in groups:
            out.setdefault(m.group(1), m.group(2))
    for clause in _CLAUSES.split(_IN_GROUP.sub(" ", text)):
        if "group" not in clause.lower():
            continue
        named = [g for g in groups if re.search(rf"(?<![\w.]){re.escape(g)}(?![\w.])", clause)]
        if len(named) != 1:
            continue  # no group, or two: which task goes where is not said here
        for word in re.findall(r"(?<![\w.])(\w+)(?!\w)", clause):
            if word in known and word != named[0]:
                out.setdefault(word, named[0])
    return out


def request_id_roles(text: str) -> tuple[str, ...]:
    """The request's identifiers tagged with what they name, as ``role:id`` (role dag, group or task), for
    :class:`IdConstraint`: a canonical request's as its grammar says; otherwise the first id the request calls
    the DAG's, the ids it calls groups, the rest tasks. Then ``member:group.task`` for each task the request
    puts in a group (:func:`request_group_members`)."""
    roles = _id_roles(text)
    of = {r: [x.split(":", 1)[1] for x in roles if x.startswith(r + ":")] for r in ("group", "task")}
    # "load_trips (in group extract)": a group a person names in plain words, not as an identifier
    extra = [m.group(2) for m in _IN_GROUP.finditer(text)
             if m.group(1) in of["task"] and m.group(2) not in of["group"] and f"dag:{m.group(2)}" not in roles]
    extra = list(dict.fromkeys(extra))
    roles, of["group"] = (*roles, *(f"group:{g}" for g in extra)), [*of["group"], *extra]
    members = request_group_members(text, of["group"], of["task"])
    need = ("need:def",) if of["task"] and _PYTHON_TASK.search(text) else ()
    return (*roles, *(f"member:{g}.{t}" for t, g in members.items()), *need)


# A request that asks for a Python task: a TaskFlow function, a python callable, a PythonOperator (not a
# `@task.bash`, whose body is a command): its file defines a function before the DAG (:meth:`IdConstraint._def_due`)
_PYTHON_TASK = re.compile(r"@task\b(?!\.)|task ?flow|python", re.I)
_MODULE_DEF = re.compile(r"(?m)^(?:async[ \t]+)?def[ \t]")
_IMPORTED = re.compile(r"(?m)^(?:from|import)[ \t]")


def _id_roles(text: str) -> tuple[str, ...]:
    canonical = _canonical_roles(text)
    if canonical is not None:
        return canonical
    dag: str | None = None
    groups: list[str] = []
    named: set[str] = set()  # ids named at least once where a task, a group or the DAG may be meant
    for a, b, ident in _occurrences(text):
        before, after = text[max(0, a - 70):a].rstrip("`"), text[b:b + 30]
        if dag is None and (_DAG_BEFORE.search(before[-40:]) or _DAG_AFTER.search(after)):
            dag = ident
        elif ((_GROUP_BEFORE.search(before[-40:]) and not _GROUP_VERB.search(before[-40:]))
              or _GROUP_AFTER.search(after)) and ident not in groups:
            groups.append(ident)
        elif _NOT_A_TASK_BEFORE.search(before):
            continue
        named.update((ident, ident.rsplit(".", 1)[-1]))  # `group.task` names its task too
        group = ident.rsplit(".", 1)[0] if "." in ident else None
        if group and group.isidentifier() and group not in groups:
            groups.append(group)  # ... and its group
    ids = request_identifiers(text)
    if dag is None and ids:  # nothing says which: requests name the DAG first far more often than not
        dag = ids[0]
    tagged = []
    for ident in ids:
        role = "dag" if ident == dag else "group" if ident in groups else "task"
        if role == "task" and ident not in named:
            continue  # only ever an owner, a tag, a callable, a connection or another DAG
        tagged.append(f"{role}:{ident}")
    tagged += [f"group:{g}" for g in groups if g not in ids and g != dag]  # a group named only in `g.t`
    return tuple(tagged)


class VocabIndex:
    """Every token's text, indexed for the two questions the constraint asks: which tokens are a prefix of
    a string, and which start with it."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.n_vocab = len(texts)
        self._texts = list(texts)
        self._by_text: dict[str, list[int]] = {}
        for tok, t in enumerate(texts):
            if t:
                self._by_text.setdefault(t, []).append(tok)
        self._sorted = sorted(self._by_text)
        self.quote_start = np.array(sorted(tok for t, toks in self._by_text.items() if t[0] in "\"'" for tok in toks),
                                    dtype=np.int64)

    def text(self, token: int) -> str:
        return self._texts[token]

    @classmethod
    def from_pieces(cls, n_vocab: int, piece: Callable[[int], bytes]) -> VocabIndex:
        return cls([piece(t).decode("utf-8", errors="replace") for t in range(n_vocab)])

    def prefixes_of(self, s: str) -> Iterable[int]:
        """Tokens whose text is a non-empty prefix of ``s``."""
        for k in range(1, len(s) + 1):
            yield from self._by_text.get(s[:k], ())

    def starting_with(self, s: str) -> Iterable[int]:
        """Tokens whose text starts with ``s`` (and is longer or equal)."""
        i = bisect.bisect_left(self._sorted, s)
        while i < len(self._sorted) and self._sorted[i].startswith(s):
            yield from self._by_text[self._sorted[i]]
            i += 1

    def toward(self, target: str) -> set[int]:
        """Tokens that move the text toward ``target``: a prefix of it, or it and more."""
        return set(self.prefixes_of(target)) | set(self.starting_with(target))


_CLOSE = {")": "(", "]": "[", "}": "{"}
_FENCE = "```"


def _empty_code(answer: str) -> bool:
    """The answer opened its code block (the fence's line is complete) and wrote nothing in it yet. A hand-written
    request made the tiny model answer with an empty block, "```python\n```", and best-of-n picked it (one error,
    DC306, fewer than a real attempt's); kept from it, the model began with " import" (an IndentationError)."""
    k = answer.find(_FENCE)
    nl = answer.find("\n", k) if k >= 0 else -1
    return nl >= 0 and not answer[nl + 1:].strip()


class BracketGuard:
    """Python's brackets kept balanced in the fenced code of an answer, token by token.

    Most of the tiny model's unparseable answers are one bracket off: a ``]`` where a ``(`` is open, a ``)``
    with none open, or the closing fence while a call is still open. The guard tracks the open brackets
    outside strings and comments (single, triple and f-strings, ``#`` comments) and says when a piece closes
    the wrong one, closes one that is not open, or closes the code block with brackets still open. Its state is
    kept for the answer so far and only the new text is scanned (the answer only grows).
    """

    def __init__(self) -> None:
        self._seen = 0  # characters of the answer scanned
        self._answer = ""
        self._state: tuple = ("pre", (), "")  # mode (pre: before the fence, code, str, comment, post), brackets, quote
        self._line = ""  # the current line's text before the scan point (to see a fence at a line start)

    @staticmethod
    def _step(state: tuple, line: str, text: str, strict: bool = True) -> tuple[tuple, str, bool]:
        """Scan ``text`` from ``state``: (new state, current line, whether a rule was broken). ``strict``
        stops at the first broken rule; otherwise the scan goes on as Python's tokenizer would recover (the
        answer so far may hold a break the guard could not prevent: every candidate broke a rule)."""
        mode, stack, quote = state
        stack = list(stack)
        i = 0
        while i < len(text):
            ch = text[i]
            if mode == "post":
                break
            if mode == "comment":
                if ch == "\n":
                    mode, line = "code", ""
                else:
                    line += ch
                i += 1
                continue
            if mode == "str":
                if ch == "\\":
                    line += text[i:i + 2]
                    i += 2
                    continue
                if text.startswith(quote, i):
                    line += quote
                    i += len(quote)
                    mode, quote = "code", ""
                    continue
                if ch == "\n" and len(quote) == 1:  # a one-line string left open: Python rejects it
                    if strict:
                        return (mode, tuple(stack), quote), line, True
                    mode, quote = "code", ""
                line = "" if ch == "\n" else line + ch
                i += 1
                continue
            if ch == "`":  # no backtick in Python code: the closing fence, or on the way to it, or a break
                at_start = line.strip() == ""
                if at_start and text.startswith(_FENCE, i):
                    if stack and strict:
                        return (mode, tuple(stack), quote), line, True
                    mode, stack = "post", []
                    break
                if at_start and _FENCE.startswith(text[i:]) and not stack:  # the fence's first backticks
                    break
                if strict:
                    return (mode, tuple(stack), quote), line, True
            if ch == "#":
                mode = "comment"
            elif ch in "\"'":
                quote = ch * 3 if text.startswith(ch * 3, i) else ch
                mode = "str"
                line += quote
                i += len(quote)
                continue
            elif ch in "([{":
                stack.append(ch)
            elif ch in _CLOSE:
                if not stack or stack[-1] != _CLOSE[ch]:
                    if strict:
                        return (mode, tuple(stack), quote), line, True
                    if stack:
                        stack.pop()
                else:
                    stack.pop()
            line = "" if ch == "\n" else line + ch
            i += 1
        return (mode, tuple(stack), quote), line, False

    def _advance(self, answer: str) -> None:
        if not answer.startswith(self._answer):  # another answer (the same guard asked about a new one)
            self.__init__()
        self._answer = answer
        if self._state[0] == "pre":
            k = answer.find("\n", answer.find(_FENCE)) if _FENCE in answer else -1
            if k < 0:
                return
            self._state, self._seen = ("code", (), ""), k + 1
        # quotes, backticks and a backslash at the very end wait for the next text: `"` then `""` is one triple
        # quote, and a fence may come a backtick at a time
        end = len(answer)
        while end > self._seen and answer[end - 1] in "\"'`\\":
            end -= 1
        if end > self._seen:
            self._state, self._line, _ = self._step(self._state, self._line, answer[self._seen:end], strict=False)
            self._seen = end

    def violates(self, answer: str, piece: str) -> bool:
        self._advance(answer)
        if self._state[0] in ("pre", "post"):
            return False
        return self._step(self._state, self._line, answer[self._seen:] + piece)[2]

    def state(self, answer: str) -> tuple:
        """(mode, open brackets, open quote) at the end of ``answer``."""
        self._advance(answer)
        if self._state[0] in ("pre", "post"):
            return self._state
        return self._step(self._state, self._line, answer[self._seen:], strict=False)[0]

    def can_end(self, answer: str) -> bool:
        """May the answer end here: outside the code block, or in it with no bracket or string open."""
        mode, stack, _ = self.state(answer)
        return mode in ("pre", "post", "comment") or (mode == "code" and not stack)


# Names a DAG file uses before it defines them (DC101, the tiny model's most common error: a python_callable
# whose function it never wrote, a task in `>>` or chain() it never made, a TaskFlow function it never defined).
_W = r"[A-Za-z_][A-Za-z0-9_]*"
_DEFINED = {
    "def": re.compile(rf"(?m)^[ \t]*(?:async[ \t]+)?def[ \t]+({_W})"),
    "assigned": re.compile(rf"(?m)^[ \t]*({_W})[ \t]*(?::[^=\n]*)?=(?!=)|\bas[ \t]+({_W})|\bfor[ \t]+({_W})[ \t]+in\b"),
    "imported": re.compile(r"(?m)^[ \t]*(?:from[ \t]+[\w.]+[ \t]+)?import[ \t]+\(?([\w \t,.\n]+?)\)?[ \t]*$"),
}
# Where only a defined name may stand, and what it must be: a callable for python_callable, a task (a name the
# file assigned) in the dependencies. Measured and left out: the start of a statement's right-hand side
# (`x = f()` with f defined, imported or built in): steered off an operator it forgot to import, the tiny model
# wrote garbage (parse rate 0.90 -> 0.53).
_NAME_PLACES = (
    ("callable", re.compile(r"\bpython_callable[ \t]*=[ \t]*$")),
    ("task", re.compile(rf"(?:>>|<<)[ \t]*\[?[ \t]*(?:{_W}[ \t]*,[ \t]*)*$")),
    ("task", re.compile(rf"\bchain\([ \t\n]*(?:\[?[ \t\n]*(?:{_W}[ \t\n]*,[ \t\n]*)*{_W}[ \t\n]*\]?[ \t\n]*,[ \t\n]*)*"
                        rf"\[?[ \t\n]*(?:{_W}[ \t\n]*,[ \t\n]*)*$")),
)
# A value assigned in the DAG's body (four spaces in, once the DAG is opened: `raw = extract()`, TaskFlow's way
# of making a task) that starts with a lower-case name: that name must be one the file defined, imported or a
# Python builtin. The tiny model called TaskFlow functions it never wrote (`x = summarize_health()`: DC101);
# stopped there it calls one it did write. A capitalised name (an operator) is left alone: the model forgets
# operator imports, which autofix adds (the measured reason the rule is not applied to every right-hand side).
_VALUE_PLACE = re.compile(rf"(?:^|\n) {{4}}{_W}[ \t]*=[ \t]*$")
_DAG_OPENED = re.compile(r"(?m)^(?:with[ \t]+(?:models\.)?DAG\(|@dag\b)")
_PY_WORDS = frozenset(keyword.kwlist) | frozenset(dir(builtins))
_WORD = re.compile(rf"(?<![A-Za-z0-9_.]){_W}")
_PLACE_ENDS = frozenset("=<>[,(")  # the last character (before spaces) of every text _NAME_PLACES/_VALUE_PLACE match
_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class NameGuard:
    """A name used in a place where it must already exist (see ``_NAME_PLACES``) must be one the answer
    defined: a ``def``, an assignment (``x =``, ``as x``, ``for x in``) or an import. While the model writes such
    a name, a piece that makes it something no defined name starts with breaks the rule; the model's own scores
    choose among the defined ones. A place with nothing defined for it is left alone."""

    def __init__(self) -> None:
        self._names: dict[str, dict[str, frozenset[str]]] = {}  # the last few texts asked about (the answer so
        # far, and the same up to its current line for a value place)
        self._places: dict[tuple[str, bool], frozenset[str] | None] = {}

    def names(self, answer: str) -> dict[str, frozenset[str]]:
        if answer not in self._names:
            got: dict[str, set[str]] = {k: set() for k in _DEFINED}
            for kind, rx in _DEFINED.items():
                for m in rx.finditer(answer):
                    for g in m.groups():
                        if not g:
                            continue
                        if kind == "imported":
                            for part in g.replace("\n", ",").split(","):
                                words = part.split()
                                if words:
                                    got[kind].add(words[-1].split(".")[0])
                        else:
                            got[kind].add(g)
            callables = got["def"] | got["imported"]
            if len(self._names) >= 4:
                self._names.pop(next(iter(self._names)))
            self._names[answer] = {"callable": frozenset(callables), "task": frozenset(got["assigned"]),
                                   "value": frozenset(callables | got["assigned"]) | _PY_WORDS}
        return self._names[answer]

    def violates(self, answer: str, piece: str) -> bool:
        """Would ``piece`` write (part of) a name in a must-exist place that no defined name is or starts with?
        Every name the piece touches is checked: the one it goes on with or ends, and any it begins."""
        window = answer[-_TAIL:] + piece
        start = len(window) - len(piece)
        lo = start  # the first name that can touch the piece starts where the word run before it does
        while lo > 0 and window[lo - 1] in _WORD_CHARS:
            lo -= 1
        for m in _WORD.finditer(window, lo):
            if m.end() < start or (m.end() == start and piece[:1] in _WORD_CHARS):
                continue  # before the piece (and not ended by it)
            whole = m.end() < len(window)
            # the places are read in the answer before the piece: a name the piece begins after a place's own
            # punctuation (`=parse` after `python_callable`) is let through. Measured: reading the piece's own
            # characters too, the tiny model wrote `python_callable.x` or `python_callable x` instead of an
            # undefined callable (parse rate 0.96 -> 0.78 on the 300 generate requests); after whitespace
            # (` extract` after `>>`) the place matches either way
            if self._check(answer[: len(answer) - (start - m.start())], m.group(0), whole):
                return True
        return False

    def _check(self, before: str, word: str, whole: bool) -> bool:
        names = self._names_at(before, word[:1].islower())
        if not names:
            return False
        if whole:
            return word not in names
        return not any(n.startswith(word) for n in names)

    def _names_at(self, before: str, lower: bool) -> frozenset[str] | None:
        """The names a must-exist place right after ``before`` takes (None: no such place, or nothing defined
        for it), remembered for the last texts asked about: a rejected token's rivals ask the same."""
        key = (before, lower)
        if key not in self._places:
            if len(self._places) >= 64:
                self._places.pop(next(iter(self._places)))
            self._places[key] = self._find_place(before, lower)
        return self._places[key]

    def _find_place(self, before: str, lower: bool) -> frozenset[str] | None:
        tail = before[-_TAIL:]
        if tail.rstrip(" \t\n")[-1:] not in _PLACE_ENDS:
            return None  # every place ends with one of these (then spaces): most texts are no place, cheaply
        places = _NAME_PLACES
        if lower and _VALUE_PLACE.search(tail) and _DAG_OPENED.search(before):
            places = (("value", _VALUE_PLACE), *places)
        for kind, rx in places:
            if rx.search(tail):
                # a value's names are those defined before its own line: `x = x()` reads x before it exists
                names = self.names(before[: before.rfind("\n") + 1] if kind == "value" else before)[kind]
                return names or None
        return None


class IdConstraint:
    """The per-request constraint: given the answer so far, the tokens allowed next (None: no constraint).

    ``identifiers`` are plain ids (any place may take them) or ``role:id`` (see :func:`request_id_roles`): a
    dag place takes the dag ids, a group place the group ids, a task place the task ids. A place whose role the
    request named no id for is left to the model (a request that names its DAG but not its tasks).
    """

    def __init__(self, index: VocabIndex, identifiers: Sequence[str], ends: Iterable[int] = ()) -> None:
        self.index = index
        self.ends = frozenset(ends)  # the end-of-generation tokens: not while a bracket or a string is open
        by_role: dict[str, list[str]] = {r: [] for r in ROLES}
        plain: list[str] = []
        self.member_of: dict[str, str] = {}  # task id -> the group the request puts it in
        self.need_def = "need:def" in identifiers  # the request asks for a Python task: a def before the DAG
        for item in identifiers:
            role, sep, ident = item.partition(":")
            if sep and role == "need":
                continue
            if sep and role == "task":
                ident = ident.rsplit(".", 1)[-1]  # `g.t`: a task_id place holds `t` (its group adds the `g.`)
            if sep and role == "member":
                group, _, task = ident.partition(".")
                self.member_of[task] = group
            elif sep and role in ROLES:
                by_role[role].append(ident)
            else:
                plain.append(item)
        self.ids = tuple(dict.fromkeys([*plain, *(i for r in ROLES for i in by_role[r])]))
        self.roles = {r: tuple(dict.fromkeys([*by_role[r], *plain])) for r in ROLES}
        self.no_groups = bool(by_role["task"]) and not self.roles["group"]
        self.tasks = tuple(dict.fromkeys(by_role["task"]))  # the task ids in the request's order
        self.brackets = BracketGuard()
        self.names = NameGuard()
        self._cache: dict[tuple, np.ndarray | None] = {}
        self._heads = BracketGuard()  # the state at line starts (a second guard: the answer's own reads ahead)
        self._forced: dict[str, str | None] = {}  # line start -> the line that must come there
        self._limits: dict[str, int | None] = {}  # line start -> how deep the statement there may go

    def _unused(self, answer: str, role: str) -> tuple[str, ...]:
        """The ids of this role no earlier place in the answer holds; empty: the request named none of this
        role, or every one is used, and the place is free (a second task with a used id is an error Airflow
        reports, DC301; one more task of the model's own is not)."""
        if role == "pull":  # an XCom pull names a task written or still to come: any of the request's
            return self.roles["task"]
        if not self.roles[role]:
            return ()
        used = _used_ids(answer)
        ids = tuple(i for i in self.roles[role] if i not in used)
        if role == "task" and self.member_of and ids:
            group = _group_block(answer)  # inside a group's block its members, outside the others; when
            # none of those is left, any unused one (a task outside its group beats a repeated or invented id)
            ids = tuple(i for i in ids if self.member_of.get(i) == group) or ids
        return ids

    def _forced_line(self, head: str) -> str | None:
        """At a statement start (``head`` ends a line): the line that must come. Before the DAG, ``def `` where a
        function is due (:meth:`_def_due`). In the DAG's body, while a requested task is unwritten, the next one in
        the request's order: a TaskGroup opening when it belongs to a group not yet opened, else the start of its
        assignment (``    t = ``, in its group's block for a member)."""
        if head in self._forced:
            return self._forced[head]
        line = None
        if self.need_def and self._def_due(head):
            line = "def "
        elif (self.tasks and head.endswith("\n") and "@task" not in head and _DAG_OPENED.search(head)):
            mode, stack, _ = self._heads.state(head)
            if mode == "code" and not stack:
                line = self._next_statement(head)
        self._forced[head] = line
        return line

    def _next_statement(self, head: str) -> str | None:
        # written: a task_id place holds it, or the body assigned its name (and wrote something else there;
        # forced again, the model loops)
        used = _used_ids(head) | _body_assigned(head)
        block = _group_block(head)
        last = next((ln for ln in reversed(head.split("\n")) if ln.strip()), "")
        indent = _statement_indent(head)
        body = 4  # the DAG body's indentation
        if block is not None:
            m = _last_with(head)
            inner = len(m.group("ind")) + 4
            if not (indent == inner or (indent is None and _TG_WITH.search(last))):
                return None
            nxt = next((t for t in self.tasks if t not in used and self.member_of.get(t) == block), None)
            if nxt is not None:
                return " " * inner + f"{nxt} = " if _assignable(nxt) else None
            if any(self.member_of.get(t) == block for t in self.tasks):  # its members written: the block ends
                body = len(m.group("ind"))
            else:
                return None  # a group the request did not fill: the model's
        elif not (indent == body or (indent is None and not last[:1].isspace())):
            return None  # not in the DAG's own body (a def's, or after it)
        nxt = next((t for t in self.tasks if t not in used), None)
        if nxt is None:
            return None
        group = self.member_of.get(nxt)
        if group:
            if any(m.group("g") == group for m in _TG_ANY.finditer(head)):
                return None  # its group was left already: the model's choice where it goes
            var = group if group.isidentifier() and not keyword.iskeyword(group) else "group"
            return " " * body + f'with TaskGroup("{group}") as {var}:\n'
        return " " * body + f"{nxt} = " if _assignable(nxt) else None

    def _reassigns(self, answer: str, piece: str) -> bool:
        """A statement of the DAG's body (or a group's block in it) that assigns a name the body assigned
        already: the tiny model, its requested tasks written, wrote the last one again (DC301)."""
        got = _last_line(answer + piece)
        if got is None:
            return False
        head, line, _ = got
        m = _REASSIGN.match(line)
        if m is None or len(head) + m.end() <= len(answer) or "@task" in head:
            return False  # no assignment, or its `=` was there before this piece
        mode, stack, _ = self._heads.state(head)
        if mode != "code" or stack:
            return False  # inside a call's brackets: an argument
        return m.group("v") in _body_assigned(head)

    def _overindented(self, answer: str, piece: str) -> bool:
        """A statement deeper than the one before it, which did not open a block (``:``): Python's
        "unexpected indent"."""
        got = _last_line(answer + piece)
        if got is None:
            return False
        head, line, lead = got
        if "`" in line[: lead + 1]:  # the closing fence
            return False
        if head not in self._limits:
            mode, stack, _ = self._heads.state(head)
            self._limits[head] = _statement_indent(head) if mode == "code" and not stack and _FENCE in head else None
        limit = self._limits[head]
        if limit is None:
            return False
        return lead > limit

    def _dedent_due(self, answer: str, piece: str) -> bool:
        """Inside a group's block whose requested members are all written in it, a new statement leaves the
        block: a piece that starts a line deeper than the ``with`` (a statement, not a bracket's next line)
        breaks the rule."""
        got = _last_line(answer + piece)
        if got is None:
            return False
        head, _, lead = got
        m = _last_with(head)
        if m is None or lead <= len(m.group("ind")) or _group_block(head) != m.group("g"):
            return False
        mode, stack, _ = self._heads.state(head)
        if mode != "code" or stack:
            return False
        members = [t for t, g in self.member_of.items() if g == m.group("g")]
        used = _used_ids(head[m.end():])
        return bool(members) and all(t in used for t in members)

    def _complete(self, partial: str, close: str, ids: tuple[str, ...], lead: str = "") -> np.ndarray | None:
        if not ids:
            return None
        key = ("c", partial, close, ids, lead)
        if key not in self._cache:
            allowed: set[int] = set()
            for ident in ids:
                if ident.startswith(partial):
                    target = lead + ident[len(partial):] + close
                    allowed |= {t for t in self.index.toward(target)
                                if _AFTER_CLOSE.match(self.index.text(t)[len(target):])}
            self._cache[key] = np.array(sorted(allowed), dtype=np.int64) if allowed else None
        return self._cache[key]

    def _open(self, ids: tuple[str, ...]) -> np.ndarray | None:
        """Before the quote: tokens that start with a quote must be a quote + the start of one of ``ids``."""
        if not ids:
            return None
        key = ("o", ids)
        if key not in self._cache:
            ok: set[int] = set()
            for q in "\"'":
                for ident in ids:
                    ok |= self.index.toward(q + ident + q)
            banned = np.setdiff1d(self.index.quote_start, np.array(sorted(ok), dtype=np.int64))
            self._cache[key] = banned if banned.size else None
        return self._cache[key]

    def rejects(self, answer: str, token: int, piece: str) -> bool:
        """:meth:`violates`, and an end token while a bracket or a string is still open."""
        if token in self.ends:
            return bool(self.ids) and (not self.brackets.can_end(answer) or _empty_code(answer))
        if not piece:  # a control token that is not an end (<|im_start|>): never part of an answer
            return bool(self.ids)
        return self.violates(answer, piece)

    def violates(self, answer: str, piece: str) -> bool:
        """Would appending ``piece`` leave a place holding a name that is not (on the way to) an allowed id?

        This catches the tokens the state rules cannot see: one that opens the quote and starts the name at
        once (``="cl``), or one that opens and closes a whole place.
        """
        if not self.ids or not piece:
            return False
        if piece.lstrip("\n")[:1] in ("`", " ", "\t") and _empty_code(answer):
            return True  # the closing fence right after the opening one (an empty answer), or indented first code
        # the rules are independent: the one that rejects most (a name that must exist) first, so that a
        # rejected token's rivals are checked cheaply
        if self.brackets.state(answer)[0] == "code" and self.names.violates(answer, piece):
            return True
        window = answer[-_TAIL:] + piece
        start = len(window) - len(piece)  # where the new piece begins
        if self.no_groups and any(m.end() > start for m in _GROUP_OPENED.finditer(window, max(0, start - 128))):
            return True
        if self.brackets.violates(answer, piece):
            return True
        if self.member_of and "\n" in answer[-200:] + piece and self._dedent_due(answer, piece):
            return True
        if self.member_of and self._overindented(answer, piece):
            return True
        if self.tasks and "\n" in answer[-200:] + piece and self._reassigns(answer, piece):
            return True
        for rx in (_OPEN_STRING, _OPEN_DEF):
            m = rx.search(window)
            if m and m.group("p"):
                ids = self._unused(answer, _kind(m))
                if ids and not any(i.startswith(m.group("p")) for i in ids):
                    return True
        for rx in (_CLOSED_STRING, _CLOSED_DEF):
            for m in rx.finditer(window):
                ids = self._unused(answer, _kind(m)) if m.end() > start else ()
                if ids and m.group("p") not in ids:
                    return True
        return False

    def pick(self, answer: str, logits: np.ndarray, text: Callable[[int], str]) -> int:
        """The greedy token that keeps the ids copied: the best-scored token among those the state allows
        that does not violate (see :meth:`violates`); the plain argmax when nothing constrains it."""
        rule = self.allowed(answer)
        if rule is None:  # the common case: the argmax, unless it would leave the ids
            best = int(logits.argmax())
            if not self.rejects(answer, best, text(best)):
                return best
        if rule is not None and rule[0] == "allow":
            pool, scores = rule[1], logits[rule[1]]
        else:
            pool, scores = None, logits
            if rule is not None:
                scores = logits.copy()
                scores[rule[1]] = -np.inf
        # the best-scored first (a partial sort), then, if every one of them breaks a rule, the rest in score
        # order: rare, e.g. when only a closing bracket is right and a tiny model scores it low at a line start
        k = min(CANDIDATES, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        first = top[np.lexsort((top, -scores[top]))]  # by score, then by id: the first maximum first
        def rest() -> Iterable[int]:  # sorted only when the first ones all fail
            yield from np.argsort(-scores, kind="stable")[k:]

        for i in itertools.chain(first, rest()):
            tok = int(i if pool is None else pool[i])
            if scores[i] == -np.inf:
                break
            if not self.rejects(answer, tok, text(tok)):
                return tok
        return int(first[0] if pool is None else pool[first[0]])

    def _def_due(self, head: str) -> bool:
        """At a top-level block start (two blank lines after the imports, the DAG not opened) in a file for a
        request with a Python task, and no function defined yet: the next block defines one. The tiny model wrote
        `PythonOperator(python_callable=x_fn)` with no function at all."""
        if not (head.endswith("\n\n\n") and _FENCE in head and not _DAG_OPENED.search(head)
                and not _MODULE_DEF.search(head) and _IMPORTED.search(head)):
            return False
        mode, stack, _ = self._heads.state(head)
        return mode == "code" and not stack

    def allowed(self, answer: str) -> tuple[str, np.ndarray] | None:
        """("allow", ids) or ("ban", ids) for the next token given the answer so far; None: anything goes."""
        if not self.ids:
            return None
        if self.tasks:
            k = answer.rfind("\n")
            target = self._forced_line(answer[: k + 1]) if k >= 0 else None
            line = answer[k + 1:]
            if target is not None and target.startswith(line) and len(line) < len(target):
                key = ("f", target[len(line):])
                if key not in self._cache:
                    got = self.index.toward(target[len(line):])
                    self._cache[key] = np.array(sorted(got), dtype=np.int64) if got else None
                if self._cache[key] is not None:
                    return ("allow", self._cache[key])
        tail = answer[-_TAIL:]
        m = _OPEN_STRING.search(tail)
        if m:
            got = self._complete(m.group("p"), m.group("q"), self._unused(answer, _kind(m)))
            return ("allow", got) if got is not None else None
        m = _OPEN_DEF.search(tail)
        if m:
            got = self._complete(m.group("p"), "(", self._unused(answer, _kind(m)))
            return ("allow", got) if got is not None else None
        m = _BEFORE_DEF.search(tail)
        if m:
            got = self._complete("", "(", self._unused(answer, _kind(m)), lead=" ")
            return ("allow", got) if got is not None else None
        m = _BEFORE_STRING.search(tail)
        if m:
            banned = self._open(self._unused(answer, _kind(m)))
            return ("ban", banned) if banned is not None else None
        return None


def constrained_argmax(logits: np.ndarray, rule: tuple[str, np.ndarray] | None) -> int:
    """The greedy token under a rule from :meth:`IdConstraint.allowed` (the first maximum, like llama.cpp)."""
    if rule is None:
        return int(logits.argmax())
    kind, toks = rule
    if kind == "allow":
        return int(toks[int(np.argmax(logits[toks]))])
    masked = logits.copy()
    masked[toks] = -np.inf
    return int(masked.argmax())


def apply_rule(logits: np.ndarray, rule: tuple[str, np.ndarray] | None) -> None:
    """Mask a row of logits in place (for a sampler chain that reads the row afterwards)."""
    if rule is None:
        return
    kind, toks = rule
    if kind == "allow":
        keep = logits[toks].copy()
        logits[:] = -np.inf
        logits[toks] = keep
    else:
        logits[toks] = -np.inf
