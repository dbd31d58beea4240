"""Copy the request's identifiers into a reformulation: a grammar-aware repair after decoding, any runtime.

A small reformulator writes the canonical request's shape well but sometimes mangles an identifier it should
have copied (``vacuum_analytics_tables`` for the requested ``vacuum_mart_tables``, a repeated piece as in
``ingest_subscriptions_subscriptions``) or writes a sixth cron field. ``snap`` re-reads the reformulation
with the canonical grammar and, for each dag id, TaskGroup and task name that does not occur in the request,
substitutes the request's most similar identifier when the similarity clears a threshold (the
request's identifiers are its snake_case words and the words in backticks). A cron literal that the request
itself contains wins over a decoded schedule that is not a valid 5-field cron. Nothing else changes: a
reformulation that does not parse is returned as it is, so the caller's fallback still applies.

Why after decoding and not inside it: the same repair then serves every runtime (PyTorch, ONNX Runtime,
CTranslate2, llama.cpp) without a logits hook in each, and its effect is measured apart (rewrite_evaluate
reports the fine-tuned model with and without it).
"""

from __future__ import annotations

import difflib
import re

from airflow_net.data.canonical import CanonicalError, parse_canonical

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BACKTICK = re.compile(r"`([^`]+)`")
_CRON5 = re.compile(r"(?<![\w*/,-])((?:[0-9*/,\-]+ ){4}[0-9*/,\-]+)(?![\w*/,-])")
# Words of the request that are never identifiers it asks for (the grammar's and people's filler).
_STOP = frozenset("""a an and the then to in of on for with at by from every each daily hourly weekly monthly
dag dags airflow task tasks group groups taskgroup schedule cron run runs it its is be that this these those
after before first next finally all both parallel called named me my please thanks hi hello""".split())
MIN_SIMILARITY = 0.6
# "a dag called orders_sync", "DAG named `orders_sync`", "dag id: orders_sync", "id orders_sync": the dag id a
# person names; it wins over a dag id the request does not contain, however dissimilar
_NAMED_DAG = re.compile(r"\b(?:dag|DAG)\b[^.\n]{0,40}?\b(?:called|named|id)\b\s*[:=]?\s*`?([A-Za-z_][A-Za-z0-9_]*)`?"
                        r"|\bid\s*[:=]?\s*`?([A-Za-z_][A-Za-z0-9_]*_[A-Za-z0-9_]*)`?")


def request_identifiers(request: str) -> list[str]:
    """The identifiers a request spells out: backticked names and snake_case words, first mention first."""
    found: list[str] = []
    for m in _BACKTICK.finditer(request):
        found += [w for w in _WORD.findall(m.group(1))]
    found += [w for w in _WORD.findall(request) if "_" in w.strip("_")]
    return list(dict.fromkeys(w for w in found if w.lower() not in _STOP))


def _similarity(a: str, b: str) -> float:
    """Character similarity, raised when the underscore-separated pieces mostly agree."""
    char = difflib.SequenceMatcher(None, a, b).ratio()
    pa, pb = set(a.split("_")), set(b.split("_"))
    pieces = len(pa & pb) / len(pa | pb) if pa | pb else 0.0
    return max(char, pieces)


def _closest(name: str, candidates: list[str], taken: set[str]) -> str | None:
    """The most similar candidate not already standing for another identifier (ties: first mention)."""
    best, score = None, MIN_SIMILARITY
    for c in candidates:
        if c in taken:
            continue
        s = _similarity(name, c)
        if s > score:
            best, score = c, s
    return best


def _valid_cron(s: str) -> bool:
    from croniter import croniter

    return len(s.split()) == 5 and croniter.is_valid(s)


_MENTION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)(\[[^\]\[ ]*\])?")


def repair(rewrite: str) -> str:
    """Mend the slips a small decoder makes most often, where the grammar leaves one reading: ``>>>`` for
    ``>>``, an operator repeated at a later mention of the same task (the first one stands), and a sixth cron
    field ``*`` (the grammar's cron has five). Anything else is left for the parser to reject."""
    text = rewrite.strip().replace(" >>> ", " >> ")
    head, _, rest = text.partition(" | schedule ")
    schedule, sep, body = rest.partition(" | ")
    if not sep:
        return text
    fields = schedule.split(" ")
    if len(fields) == 6 and fields[-1] == "*":
        schedule = " ".join(fields[:5])
    seen: set[str] = set()

    def mention(m: re.Match) -> str:
        tid, op = m.group(1), m.group(2)
        if op and tid in seen:
            return tid
        if op:
            seen.add(tid)
        return m.group(0)

    body = " ; ".join(" >> ".join(_MENTION.sub(mention, part, count=1) for part in chain.split(" >> "))
                      for chain in body.split(" ; "))
    return f"{head} | schedule {schedule} | {body}"


def snap(rewrite: str, request: str) -> str:
    """``rewrite`` mended (``repair``) and with each identifier not found in ``request`` replaced by the
    request's closest one; returned unchanged when even the mended text does not parse."""
    mended = repair(rewrite)
    try:
        c = parse_canonical(mended)
    except CanonicalError:
        return rewrite
    rewrite = mended
    ids = request_identifiers(request)
    if not ids:
        return rewrite
    present = set(ids)
    names: list[str] = [c.dag_id] + c.groups + [t.split(".", 1)[-1] for t in c.tasks]
    mapping: dict[str, str] = {}
    # identifiers the reformulation already copied right are taken: nothing else may be snapped onto them
    taken = {n for n in names if n in present}
    named = _NAMED_DAG.search(request)
    named_dag = next((g for g in named.groups() if g), None) if named else None
    if named_dag and c.dag_id not in present and named_dag not in taken:
        mapping[c.dag_id] = named_dag
        taken.add(named_dag)
    for n in dict.fromkeys(names):
        if n in present or n in mapping:
            continue
        target = _closest(n, ids, taken)
        if target is not None:
            mapping[n] = target
            taken.add(target)
    head, rest = rewrite.split(" | schedule ", 1)
    schedule, body = rest.split(" | ", 1)
    if schedule.strip() != "none" and not schedule.startswith("@") and not _valid_cron(schedule):
        crons = [m.group(1) for m in _CRON5.finditer(request) if _valid_cron(m.group(1))]
        if crons:
            schedule = crons[0]
    if mapping:
        sub = re.compile(r"(?<![A-Za-z0-9_@\[])(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True)))
                         + r")(?![A-Za-z0-9_\]])")

        def repl(m: re.Match) -> str:
            # operators sit inside [...]: never rewritten (the lookarounds exclude the bracket's first char)
            return mapping[m.group(1)]

        head = "dag " + sub.sub(repl, head[len("dag "):])
        body = _sub_outside_brackets(sub, repl, body)
    out = f"{head} | schedule {schedule} | {body}"
    try:
        parse_canonical(out)
    except CanonicalError:
        return rewrite
    return out


def _sub_outside_brackets(rx: re.Pattern, repl, text: str) -> str:
    parts = re.split(r"(\[[^\]]*\])", text)
    return "".join(p if p.startswith("[") else rx.sub(repl, p) for p in parts)


def pick(candidates: list[str], request: str, *, mend: bool = True) -> str:
    """The first of ``candidates`` (best first, e.g. beams) that parses as a canonical request, after
    ``snap`` when ``mend``; the first candidate when none parses (the caller's fallback then applies)."""
    return pick_index(candidates, request, mend=mend)[1]


def pick_index(candidates: list[str], request: str, *, mend: bool = True) -> tuple[int, str]:
    """``pick``'s choice and its position among ``candidates``."""
    if not candidates:
        raise ValueError("pick: expected at least one candidate")
    done = [snap(c, request) if mend else c for c in candidates]
    for i, c in enumerate(done):
        try:
            parse_canonical(c)
        except CanonicalError:
            continue
        return i, c
    return 0, done[0]
