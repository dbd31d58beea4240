"""Generation strategies: how many answers to ask for and how to pick or fix one.

A strategy works over a *backend*: a callable ``complete(conversations, temperature=, seed=)`` that returns one
answer row (``text``, ``completion_tokens``, ...) per conversation, in order. ``chat_many`` over the in-process
engine is one backend; a remote OpenAI-compatible client is another. Candidates are judged by dagcheck (static
tiers); generated code is never imported or executed here.

Strategies live in ``STRATEGIES`` (name -> function) so one more (e.g. ``templated``) plugs in as one entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_net.dagcheck.findings import Finding, Report
from airflow_net.evaluate.metrics import extract_code

log = logging.getLogger(__name__)

Backend = Callable[..., list[dict[str, Any]]]
Judge = Callable[[str], Report]


def dagcheck_judge(airflow: int = 3, *, autofix: bool = False) -> Judge:
    """Judge one source with dagcheck's static tiers (no import, no execution). ``autofix``: every answer first
    gets the fixes its findings name (:func:`airflow_net.dagcheck.fix.fix_source`, with ``drop_unknown``: a
    model's answer, so a task it referred to but never wrote leaves the dependencies), and the fixed code is
    what is judged and returned."""
    from airflow_net.dagcheck.fix import fix_source
    from airflow_net.dagcheck.validate import validate_sources

    def judge(source: str) -> Report:
        return validate_sources([("candidate.py", source)], airflow=airflow)[0]

    if autofix:
        judge.fix = lambda source: fix_source(source, airflow=airflow, drop_unknown=True).source  # type: ignore[attr-defined]
    return judge


@dataclass
class Outcome:
    """What a strategy returns for one request."""

    text: str  # the chosen answer (raw model text)
    code: str  # the code extracted from it
    valid: bool
    errors: int
    findings: list[dict[str, Any]]
    candidates: int  # answers generated in all
    rounds: int  # repair rounds used (0: none)
    completion_tokens: int
    seconds: float
    history: list[dict[str, str]] = field(default_factory=list)  # the follow-up turns repair sent
    fallback: bool = False  # templated only: the request did not render, another strategy answered


def _judge_text(judge: Judge, text: str) -> tuple[str, Report]:
    code = extract_code(text)
    fix = getattr(judge, "fix", None)
    if fix is not None:
        code = fix(code)
    return code, judge(code)


def _pick(rows: list[dict[str, Any]], judge: Judge) -> tuple[int, str, Report, int]:
    """The first valid candidate in input order, else the best of the others: one that parses before one that
    does not (a broken sample has fewer findings, a single DC001), then fewest errors (ties: the earliest).

    Judging stops at the first valid one: candidates after it are never checked. Returns (index, code, report,
    judged).
    """
    best: tuple[int, str, Report] | None = None
    judged = 0
    for i, row in enumerate(rows):
        code, rep = _judge_text(judge, row["text"])
        judged += 1
        if rep.ok:
            return i, code, rep, judged
        if best is None or _report_rank(rep) > _report_rank(best[2]):
            best = (i, code, rep)
    assert best is not None
    return best[0], best[1], best[2], judged


def _report_rank(rep: Report) -> tuple[bool, int]:
    return (not any(f.code == "DC001" for f in rep.errors), -len(rep.errors))


def format_findings(findings: list[Finding]) -> str:
    """The follow-up turn repair sends: exactly the reported error findings, one per line."""
    lines = ["The DAG above fails validation with these errors:"]
    for f in findings:
        hint = f" (hint: {f.hint})" if f.hint else ""
        lines.append(f"- {f.code} line {f.line}: {f.message}{hint}")
    lines.append("Answer with the corrected DAG only.")
    return "\n".join(lines)


def direct(messages: list[dict[str, str]], backend: Backend, judge: Judge, **_: Any) -> Outcome:
    """One greedy answer."""
    t0 = time.perf_counter()
    row = backend([messages], temperature=0.0, seed=0)[0]
    code, rep = _judge_text(judge, row["text"])
    return Outcome(row["text"], code, rep.ok, len(rep.errors), [f.to_dict() for f in rep.errors], 1, 0,
                   int(row.get("completion_tokens", 0)), time.perf_counter() - t0)


def best_of_n(messages: list[dict[str, str]], backend: Backend, judge: Judge, *, n: int = 4,
              temperature: float = 0.3, seed: int = 0, **_: Any) -> Outcome:
    """The greedy answer first, alone; when it is not valid, n-1 samples in ONE backend batch (candidate i seeded
    seed+i: deterministic under a seed), and the first valid in that order, else the best. Stopping at a valid
    greedy answer costs nothing in quality (it would be picked first anyway) and saves the samples' time for
    the answers that need none. With the greedy one first, best-of-n is never worse than direct: a small model's
    samples can go wrong from the first token."""
    if n < 1:
        raise ValueError(f"best_of_n needs n >= 1 (got {n})")
    t0 = time.perf_counter()
    rows = backend([messages], temperature=0.0, seed=seed)
    code, rep = _judge_text(judge, rows[0]["text"])
    i = 0
    if not rep.ok and n > 1:
        rows += backend([messages] * (n - 1), temperature=[temperature] * (n - 1),
                        seed=[seed + k for k in range(1, n)])
        j, code_j, rep_j, _judged = _pick(rows[1:], judge)
        if rep_j.ok or _report_rank(rep_j) > _report_rank(rep):  # a tie keeps the greedy one (the earliest)
            i, code, rep = j + 1, code_j, rep_j
    return Outcome(rows[i]["text"], code, rep.ok, len(rep.errors), [f.to_dict() for f in rep.errors], len(rows), 0,
                   sum(int(r.get("completion_tokens", 0)) for r in rows), time.perf_counter() - t0)


def _rank(o: Outcome) -> tuple[bool, bool, int]:
    """Better answers rank higher: valid, then at least parsing (no DC001), then fewer errors."""
    return (o.valid, not any(f.get("code") == "DC001" for f in o.findings), -o.errors)


def repair(messages: list[dict[str, str]], backend: Backend, judge: Judge, *, rounds: int = 2,
           start: Outcome | None = None, **kw: Any) -> Outcome:
    """Feed the validator's findings back as a follow-up turn, up to ``rounds`` times or until valid.

    ``start`` is a first answer from another strategy (best-of-n, then repair of the best); else a direct one.
    """
    if rounds < 0:
        raise ValueError(f"repair needs rounds >= 0 (got {rounds})")
    t0 = time.perf_counter()
    cur = start or direct(messages, backend, judge)
    conv = list(messages)
    history: list[dict[str, str]] = []
    used = 0
    tokens, cands = cur.completion_tokens, cur.candidates
    best = cur
    from airflow_net.serve.engine import PromptTooLong

    while not cur.valid and used < rounds:
        errors = [Finding.from_dict(d) for d in cur.findings]
        turn = [{"role": "assistant", "content": cur.text}, {"role": "user", "content": format_findings(errors)}]
        try:
            row = backend([conv + turn], temperature=0.0, seed=0)[0]
        except PromptTooLong as e:  # the conversation outgrew the context: keep the best answer seen so far
            log.info("repair stopped after %d round(s): %s", used, e)
            break
        conv += turn
        history += turn
        used += 1
        code, rep = _judge_text(judge, row["text"])
        tokens += int(row.get("completion_tokens", 0))
        cands += 1
        cur = Outcome(row["text"], code, rep.ok, len(rep.errors), [f.to_dict() for f in rep.errors], cands, used,
                      tokens, 0.0)
        if _rank(cur) > _rank(best):  # a round can make it worse: keep the best answer seen
            best = cur
    best.candidates, best.rounds, best.completion_tokens = cands, used, tokens
    best.seconds = time.perf_counter() - t0 + (start.seconds if start else 0.0)
    best.history = history
    return best


def best_of_n_repair(messages: list[dict[str, str]], backend: Backend, judge: Judge, *, n: int = 4,
                     rounds: int = 2, temperature: float = 0.3, seed: int = 0, **_: Any) -> Outcome:
    """Best-of-n, then repair of the best."""
    first = best_of_n(messages, backend, judge, n=n, temperature=temperature, seed=seed)
    return repair(messages, backend, judge, rounds=rounds, start=first)


def templated(messages: list[dict[str, str]], backend: Backend, judge: Judge, *,
              reformulate: Callable[[str], str] | None = None, fallback: str = "direct", airflow: int = 3,
              **kw: Any) -> Outcome:
    """The request as a canonical request (as written, or as ``reformulate`` rewrites it, e.g. the rewrite model),
    parsed into a spec and rendered by the corpus factory's renderer: valid by construction, no model tokens.
    A request that does not parse (nor its reformulation) is answered by the ``fallback`` strategy instead."""
    from airflow_net.data.canonical import canonical_to_dag_source
    from airflow_net.serve.generation import _request_text

    if fallback == "templated" or fallback not in STRATEGIES:
        raise ValueError(f"templated's fallback must be one of the LLM strategies, got {fallback!r}")
    t0 = time.perf_counter()
    request = _request_text(messages)
    tries = [request] + ([reformulate(request)] if reformulate is not None else [])
    for text in tries:
        try:
            source = canonical_to_dag_source(text.strip(), airflow=airflow)
        except ValueError:  # CanonicalError, or a fact the renderer cannot express
            continue
        answer = f"```python\n{source.strip()}\n```"
        code, rep = _judge_text(judge, answer)
        return Outcome(answer, code, rep.ok, len(rep.errors), [f.to_dict() for f in rep.errors], 0, 0, 0,
                       time.perf_counter() - t0)
    out = STRATEGIES[fallback](messages, backend, judge, **kw)
    out.fallback = True
    return out


def reformulated(messages: list[dict[str, str]], backend: Backend, judge: Judge, *,
                 reformulate: Callable[[str], str] | None = None, **_: Any) -> Outcome:
    """The request reformulated first (the rewrite model: a person's request -> the canonical request), then
    one greedy answer of the DAG model to that: ``generate --rewrite`` with the direct strategy. Set beside
    ``direct`` on the same requests, it measures what the reformulator buys the DAG model (issue 15, item 8)."""
    from airflow_net.serve.generation import _request_text

    if reformulate is None:
        raise ValueError("the reformulated strategy needs the rewrite model (reformulate=...)")
    t0 = time.perf_counter()
    request = _request_text(messages)
    concise = reformulate(request)
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    out = direct([*messages[:first_user], {**messages[first_user], "content": concise},
                  *messages[first_user + 1:]], backend, judge)
    out.seconds = time.perf_counter() - t0
    return out


STRATEGIES: dict[str, Callable[..., Outcome]] = {
    "direct": direct,
    "best_of_n": best_of_n,
    "repair": repair,
    "best_of_n_repair": best_of_n_repair,
    "templated": templated,
    "reformulated": reformulated,
}


def run_strategy(name: str, messages: list[dict[str, str]], backend: Backend, judge: Judge, **kw: Any) -> Outcome:
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, got {name!r}")
    return STRATEGIES[name](messages, backend, judge, **kw)


def engine_backend(engine: Any, *, max_tokens: int, top_p: float = 1.0, copy_ids: bool = False) -> Backend:
    # temperature: one for all conversations, or one each (best-of-n: greedy first, then samples)
    """A backend over the in-process continuous-batching engine: every conversation of a call in one batch.

    ``seed`` is one int for all, or one per conversation (best-of-n seeds its candidates seed+i). ``copy_ids``:
    the answer's ids are copied from the request (the conversation's first user turn; see serve.copy_ids).
    """
    from airflow_net.serve.copy_ids import request_id_roles
    from airflow_net.serve.engine import SamplingParams
    from airflow_net.serve.generation import _request_text, _row

    def complete(conversations: list[list[dict[str, str]]], *, temperature: float | list[float] = 0.0,
                 seed: int | list[int] = 0) -> list[dict[str, Any]]:
        seeds = seed if isinstance(seed, list) else [seed] * len(conversations)
        temps = temperature if isinstance(temperature, list) else [temperature] * len(conversations)
        prompts = [engine.render_chat(m) for m in conversations]
        ids = [request_id_roles(_request_text(m)) if copy_ids else () for m in conversations]
        params = [SamplingParams(max_tokens=max(1, min(max_tokens, engine.n_ctx - len(engine.tokenize(p)))),
                                 temperature=t, top_p=top_p, seed=s, copy_ids=i)
                  for p, s, i, t in zip(prompts, seeds, ids, temps, strict=True)]
        return [_row(c) for c in engine.generate_many(prompts, params)]

    return complete
