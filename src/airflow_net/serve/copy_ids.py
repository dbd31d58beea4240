"""Identifiers copied from the request: a decoding constraint for the ids a DAG file names.

A small model writes the shape of a DAG well but invents its identifiers (issue 16: the tiny default used the
requested dag id 10% of the time). When a request names its ids, the answer's id strings should be those ids.
While the model writes one of the places where Airflow reads an id (``dag_id="...``, ``task_id="...``,
``group_id="...``, ``DAG("...``, ``TaskGroup("...``, and the function name after ``@dag``/``@task``), only tokens
that keep the text on the way to one of the request's identifiers (and then the closing quote or parenthesis)
are allowed; everywhere else the model decodes freely. Among the allowed tokens the model's own scores decide,
so it still chooses *which* of the request's ids goes where. An id already written in an earlier place is not
offered again (two tasks with one id is an error Airflow reports), unless every id has been used.

The constraint is a mask over the vocabulary, built from the tokens' text: no grammar engine, any tokenizer.
A place the request has no id for (the model started a name that is not a prefix of any) is left alone.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

# An identifier as a person writes it in a request: `backticked`, or a bare snake_case / digit-bearing word
# (a plain word such as "extract" is only taken when backticked: too many English words look like ids).
_BACKTICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_.\-]*)`")
_SNAKE = re.compile(r"(?<![A-Za-z0-9_.\-/])([A-Za-z_][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+)(?![A-Za-z0-9_\-/]|\.\w)")

# The places Airflow reads an id from, and which kind of id each takes: the `k` (keyword), `c` (constructor) or
# `d` (decorator) group says dag, task or group.
_PLACE = r"""(?:\b(?P<k>dag_id|task_id|group_id)\s*=\s*|\b(?P<c>DAG|TaskGroup)\(\s*)"""
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
_GROUP_BEFORE = re.compile(r"\b(?:task ?groups?|groups?)\b[^.;:\n]{0,12}$", re.I)


def _kind(m: re.Match) -> str:
    word = (m.groupdict().get("k") or m.groupdict().get("c") or m.groupdict().get("d") or "").lower()
    return "dag" if word.startswith("dag") else "group" if "group" in word else "task"


def _occurrences(text: str) -> list[tuple[int, int, str]]:
    spans = [(m.start(1), m.end(1), m.group(1)) for m in _BACKTICKED.finditer(text)]
    if len(spans) >= 2:  # a request that quotes its ids quotes all of them: bare words are prose ("pg_dump")
        return spans
    taken = [(a - 1, b + 1) for a, b, _ in spans]
    spans += [(m.start(1), m.end(1), m.group(1)) for m in _SNAKE.finditer(text)
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


def request_id_roles(text: str) -> tuple[str, ...]:
    """The request's identifiers tagged with what they name, as ``role:id`` (role dag, group or task), for
    :class:`IdConstraint`: the first id the request calls the DAG's, the ids it calls groups, the rest tasks."""
    dag: str | None = None
    groups: list[str] = []
    for a, b, ident in _occurrences(text):
        before, after = text[max(0, a - 40):a].rstrip("`"), text[b:b + 30]
        if dag is None and (_DAG_BEFORE.search(before) or _DAG_AFTER.search(after)):
            dag = ident
        elif _GROUP_BEFORE.search(before) and ident not in groups:
            groups.append(ident)
    ids = request_identifiers(text)
    if dag is None and ids:  # nothing says which: requests name the DAG first far more often than not
        dag = ids[0]
    tagged = []
    for ident in ids:
        role = "dag" if ident == dag else "group" if ident in groups else "task"
        tagged.append(f"{role}:{ident}")
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


class IdConstraint:
    """The per-request constraint: given the answer so far, the tokens allowed next (None: no constraint).

    ``identifiers`` are plain ids (any place may take them) or ``role:id`` (see :func:`request_id_roles`): a
    dag place takes the dag ids, a group place the group ids, a task place the task ids. A place whose role the
    request named no id for is left to the model (a request that names its DAG but not its tasks).
    """

    def __init__(self, index: VocabIndex, identifiers: Sequence[str]) -> None:
        self.index = index
        by_role: dict[str, list[str]] = {r: [] for r in ROLES}
        plain: list[str] = []
        for item in identifiers:
            role, sep, ident = item.partition(":")
            if sep and role in ROLES:
                by_role[role].append(ident)
            else:
                plain.append(item)
        self.ids = tuple(dict.fromkeys([*plain, *(i for r in ROLES for i in by_role[r])]))
        self.roles = {r: tuple(dict.fromkeys([*by_role[r], *plain])) for r in ROLES}
        self._cache: dict[tuple, np.ndarray | None] = {}

    def _unused(self, answer: str, role: str) -> tuple[str, ...]:
        """The ids of this role no earlier place in the answer holds (all of them once every one is used);
        empty: the request named none of this role, and the place is free."""
        if not self.roles[role]:
            return ()
        used = {m.group("p") for rx in (_CLOSED_STRING, _CLOSED_DEF) for m in rx.finditer(answer)}
        left = tuple(i for i in self.roles[role] if i not in used)
        return left or self.roles[role]

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

    def violates(self, answer: str, piece: str) -> bool:
        """Would appending ``piece`` leave a place holding a name that is not (on the way to) an allowed id?

        This catches the tokens the state rules cannot see: one that opens the quote and starts the name at
        once (``="cl``), or one that opens and closes a whole place.
        """
        if not self.ids or not piece:
            return False
        window = answer[-_TAIL:] + piece
        start = len(window) - len(piece)  # where the new piece begins
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
            if not self.violates(answer, text(best)):
                return best
        if rule is not None and rule[0] == "allow":
            order = rule[1][np.argsort(-logits[rule[1]], kind="stable")][:CANDIDATES]
        else:
            row = logits
            if rule is not None:
                row = logits.copy()
                row[rule[1]] = -np.inf
            k = min(CANDIDATES, row.size)
            top = np.argpartition(-row, k - 1)[:k]
            order = top[np.lexsort((top, -row[top]))]  # by score, then by id: the first maximum first
        for tok in order:
            if not self.violates(answer, text(int(tok))):
                return int(tok)
        return int(order[0])

    def allowed(self, answer: str) -> tuple[str, np.ndarray] | None:
        """("allow", ids) or ("ban", ids) for the next token given the answer so far; None: anything goes."""
        if not self.ids:
            return None
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
