"""Identifiers copied from the request: a decoding constraint for the ids a DAG file names.

A small model writes the shape of a DAG well but invents its identifiers (issue 16: the tiny default used the
requested dag id 10% of the time). When a request names its ids, the answer's id strings should be those ids.
While the model writes one of the places where Airflow reads an id (``dag_id="...``, ``task_id="...``,
``group_id="...``, ``DAG("...``, ``TaskGroup("...``, and the function name after ``@dag``/``@task``), only tokens
that keep the text on the way to one of the request's identifiers (and then the closing quote or parenthesis)
are allowed; everywhere else the model decodes freely. Among the allowed tokens the model's own scores decide,
so it still chooses *which* of the request's ids goes where.

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

# The end of the answer so far, inside a string or name that Airflow reads as an id: (opening, partial id).
_OPEN_STRING = re.compile(
    r"""(?:\b(?:dag_id|task_id|group_id)\s*=\s*|\b(?:DAG|TaskGroup)\(\s*)(?P<q>["'])(?P<p>[A-Za-z0-9_.\-]*)$"""
)
_OPEN_DEF = re.compile(r"(?:^|\n)[ \t]*@(?:dag|task)\b[^\n]*\n(?:[ \t]*@[^\n]*\n)*[ \t]*def[ \t]+(?P<p>[A-Za-z0-9_]*)$")
# Just before an id string opens: a token that starts with the quote may carry the id's first characters.
_BEFORE_STRING = re.compile(r"""(?:\b(?:dag_id|task_id|group_id)\s*=\s*|\b(?:DAG|TaskGroup)\(\s*)$""")
# A whole id place inside the text (to check one that a single token opened and closed at once).
_CLOSED_STRING = re.compile(
    r"""(?:\b(?:dag_id|task_id|group_id)\s*=\s*|\b(?:DAG|TaskGroup)\(\s*)(?P<q>["'])(?P<p>[^"'\n]*)(?P=q)"""
)
_CLOSED_DEF = re.compile(r"(?:^|\n)[ \t]*@(?:dag|task)\b[^\n]*\n(?:[ \t]*@[^\n]*\n)*[ \t]*def[ \t]+(?P<p>[A-Za-z0-9_]+)\(")
_TAIL = 400  # characters of the answer looked at: an id place is short
CANDIDATES = 64  # best-scored tokens tried, in order, before falling back to the allowed set


def request_identifiers(text: str) -> tuple[str, ...]:
    """The identifiers a request names, in order of first appearance (``group.task`` also gives ``task``)."""
    found: list[str] = []
    for m in _BACKTICKED.finditer(text):
        found.append(m.group(1))
    for m in _SNAKE.finditer(text):
        found.append(m.group(1))
    out: list[str] = []
    for ident in found:
        for part in (ident, ident.rsplit(".", 1)[-1]):
            if part and part not in out:
                out.append(part)
    return tuple(out)


class VocabIndex:
    """Every token's text, indexed for the two questions the constraint asks: which tokens are a prefix of
    a string, and which start with it."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.n_vocab = len(texts)
        self._by_text: dict[str, list[int]] = {}
        for tok, t in enumerate(texts):
            if t:
                self._by_text.setdefault(t, []).append(tok)
        self._sorted = sorted(self._by_text)
        self.quote_start = np.array(sorted(tok for t, toks in self._by_text.items() if t[0] in "\"'" for tok in toks),
                                    dtype=np.int64)

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
    """The per-request constraint: given the answer so far, the tokens allowed next (None: no constraint)."""

    def __init__(self, index: VocabIndex, identifiers: Sequence[str]) -> None:
        self.index = index
        self.ids = tuple(identifiers)
        self._cache: dict[tuple[str, str, str], np.ndarray | None] = {}

    def _complete(self, partial: str, close: str) -> np.ndarray | None:
        key = ("c", partial, close)
        if key not in self._cache:
            allowed: set[int] = set()
            for ident in self.ids:
                if ident.startswith(partial):
                    allowed |= self.index.toward(ident[len(partial):] + close)
            self._cache[key] = np.array(sorted(allowed), dtype=np.int64) if allowed else None
        return self._cache[key]

    def _open(self) -> np.ndarray | None:
        """Before the quote: tokens that start with a quote must be a quote + the start of some id (or more)."""
        key = ("o", "", "")
        if key not in self._cache:
            ok: set[int] = set()
            for q in "\"'":
                for ident in self.ids:
                    ok |= self.index.toward(q + ident + q)
            banned = np.setdiff1d(self.index.quote_start, np.array(sorted(ok), dtype=np.int64))
            self._cache[key] = banned if banned.size else None
        return self._cache[key]

    def violates(self, answer: str, piece: str) -> bool:
        """Would appending ``piece`` leave an id place with a name that is not (on the way to) a requested id?

        This catches the tokens the state rules cannot see: one that opens the quote and starts the name at
        once (``="cl``), or one that opens and closes a whole id place.
        """
        if not self.ids or not piece:
            return False
        window = answer[-_TAIL:] + piece
        start = len(window) - len(piece)  # where the new piece begins
        for rx in (_OPEN_STRING, _OPEN_DEF):
            m = rx.search(window)
            if m and m.group("p") and not any(i.startswith(m.group("p")) for i in self.ids):
                return True
        for rx in (_CLOSED_STRING, _CLOSED_DEF):
            for m in rx.finditer(window):
                if m.end() > start and m.group("p") not in self.ids:
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
            got = self._complete(m.group("p"), m.group("q"))
            return ("allow", got) if got is not None else None
        m = _OPEN_DEF.search(tail)
        if m:
            got = self._complete(m.group("p"), "(")
            return ("allow", got) if got is not None else None
        if _BEFORE_STRING.search(tail):
            banned = self._open()
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
