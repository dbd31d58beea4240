"""Instructions from Claude: ``per_request`` instructions per DAG, through Message Batches (half price) or
live calls, resumable and cost-accounted.

Every request is keyed by a content hash of (model, prompt template, DAG, sampling params) and every event
is written to an append-only ledger in the stage's output folder before the next step starts. So a rerun
pays only for what is not answered yet, and a kill at any moment resumes without a second submission:

- killed before a batch is created: the ``intent`` is in the ledger; the rerun looks for the batch on the
  server (``batches.list``: created after the intent, same request count), finds none and submits;
- killed after the API created it but before its id was written: the rerun finds it the same way and
  adopts it (its results must then carry our custom ids, else it is rejected);
- killed while polling or while reading results: the rerun polls again and reads the results again (free),
  skipping those already recorded.

Live calls (``instruct.batch: false``) have no server-side record: a kill loses the answers in flight
(at most ``instruct.concurrency`` requests), which a rerun asks again.

The API key is read from ``ANTHROPIC_API_KEY`` only, and written nowhere.

The run machinery (ledger, resume, retries, cost guard: ``run_requests``) knows nothing of instructions: a
``Job`` says how an answer is checked and what to call things in messages. ``INSTRUCT`` is this stage's job;
the evaluate stage's LLM judge (``evaluate/judge_backends.py``) is another.

Under DVC the stage's output folder must be ``persist: true`` in ``dvc.yaml``: otherwise DVC deletes it,
ledger included, before every rerun, and a changed param pays again for every answer.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_net.data.anthropic_cost import live_one_per_instruction_usd, usage_tokens, usd, worst_case_usd
from airflow_net.data.anthropic_ledger import Ledger, State, Submission
from airflow_net.data.anthropic_prompt import (
    PROMPT_VERSION,
    check_answer,
    estimate_input_tokens,
    message_params,
    request_key,
    styles_for,
)
from airflow_net.data.instruct import pair
from airflow_net.params import AnthropicParams, InstructParams
from airflow_net.utils import UserError

log = logging.getLogger(__name__)

LEDGER_DIR = "ledger"  # inside the instruct stage's output folder
CLOCK_SLACK_S = 600  # a batch found on the server may be this much older than our intent (clock skew)
# Errors that a resubmission cannot fix: reported, not retried.
PERMANENT_ERRORS = {"invalid_request_error", "authentication_error", "permission_error", "not_found_error", "billing_error"}
SPEND_LIMIT_CODES = {"enforced_spend_limit_reached", "contract_spend_limit_reached"}


def _checkpoint(name: str) -> None:
    """A seam for the crash tests, which make it raise at a named moment; does nothing in a normal run."""


@dataclass
class Request:
    key: str  # the content hash: the ledger key and the batch custom_id
    body: dict[str, Any]  # the Messages API body
    est_input_tokens: int  # generous, for the cost guard
    source: str = ""  # instruct: the DAG the instructions are for
    variants: list[str] = field(default_factory=list)  # instruct: the styles asked for, in order
    records: list[dict[str, Any]] = field(default_factory=list)  # instruct: the corpus records sharing this DAG


@dataclass(frozen=True)
class Job:
    """What a run asks the API for: how an answer is checked, where the ledger keeps it, what messages call it."""

    name: str  # in log lines and the budget refusal: "instruct", "evaluate judge"
    budget_key: str  # the param that caps spending, named when the guard refuses
    switch_off: str  # the setting that turns the API off, named when the key is missing
    # (request, answer text, stop_reason) -> (the answer to keep, None) or (None, why it is invalid)
    parse: Callable[[Request, str, str | None], tuple[Any, str | None]]
    answer_field: str  # the ledger field holding a valid answer (State.done reads it)
    retry_invalid: bool = True  # resubmit an invalid answer (instruct); False: it is final, counted as a failure
    # The guard counts what the whole ledger spent (instruct: one budget for the stage's folder), or only what
    # these requests cost (the judge: its cache outlives many evaluations, each with its own budget).
    budget_over_ledger: bool = True


def _parse_instructions(req: Request, text: str, stop_reason: str | None) -> tuple[Any, str | None]:
    verdict = check_answer(text, len(req.variants), req.source, stop_reason)
    return verdict.instructions, verdict.reason


INSTRUCT = Job("instruct", "instruct.max_cost_usd", "instruct.provider: offline", _parse_instructions, "instructions")


def build_requests(records: list[dict[str, Any]], params: InstructParams) -> dict[str, Request]:
    """One request per distinct DAG (records with the same code share it), keyed by its content hash."""
    styles = styles_for(params.per_request)
    out: dict[str, Request] = {}
    for rec in records:
        airflow = int(rec.get("airflow") or 3)
        key = request_key(rec["source"], airflow, params)
        if key not in out:
            body = message_params(rec["source"], airflow, params, styles)
            out[key] = Request(key, body, estimate_input_tokens(body), rec["source"], [s[0] for s in styles])
        out[key].records.append(rec)
    return out


def make_client(params: AnthropicParams, switch_off: str = INSTRUCT.switch_off) -> Any:
    """The SDK client, with the key from the environment and nowhere else (``ANTHROPIC_BASE_URL`` is honoured
    by the SDK, which is how the tests point it at a local mock)."""
    key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
    if not key:
        setting = switch_off.split(":")[0]
        raise UserError(
            f"{setting} is 'anthropic' but ANTHROPIC_API_KEY is not set: export it in the shell that runs"
            f" the stage (it is read from the environment only), or set {switch_off}"
        )
    import anthropic

    return anthropic.Anthropic(api_key=key, max_retries=params.api_max_retries)


def _retry_after(exc: Exception, attempt: int) -> float:
    headers = getattr(getattr(exc, "response", None), "headers", {}) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return min(60.0, float(headers.get(name)) * scale)
        except (TypeError, ValueError):
            pass
    return min(30.0, 0.5 * 2**attempt)


def _api_user_error(exc: Exception) -> UserError | None:
    """Errors the user must fix (the key, permissions, spend limits), as one line without the key."""
    import anthropic

    status = getattr(exc, "status_code", None)
    if isinstance(exc, anthropic.AuthenticationError):
        return UserError(f"the Anthropic API rejected ANTHROPIC_API_KEY ({status}): check the key in your environment")
    if isinstance(exc, anthropic.PermissionDeniedError):
        return UserError(f"the Anthropic API refused access ({status}): {getattr(exc, 'api_message', '') or exc}")
    if getattr(exc, "error_code", None) in SPEND_LIMIT_CODES:
        return UserError(f"the Anthropic account reached a spend limit ({exc.error_code}); raise it in the console")
    return None


def permanent_failure(state: State, key: str, job: Job = INSTRUCT) -> bool:
    """The last answer was an error that asking again cannot fix (a bad request, an unknown model), or an
    invalid answer for a job that does not resubmit those."""
    rs = state.results.get(key) or []
    if not rs:
        return False
    return rs[-1].get("error_type") in PERMANENT_ERRORS or (not job.retry_invalid and bool(rs[-1].get("invalid")))


class _Run:
    """One run of the provider over the requests, writing every step to the ledger."""

    def __init__(self, client: Any, ledger: Ledger, state: State, params: AnthropicParams, reqs: dict[str, Request],
                 job: Job = INSTRUCT):
        self.client, self.ledger, self.state, self.p, self.reqs, self.job = client, ledger, state, params, reqs, job
        self.submitted = 0  # requests sent to the API in this run
        self.batches = 0
        self.adopted = 0
        self.budget_stopped = False

    # -- ledger ------------------------------------------------------------------------------------
    def record(self, event: dict[str, Any], sync: bool = False) -> dict[str, Any]:
        ev = self.ledger.append(event, sync=sync)
        self.state.apply(ev)
        return ev

    # -- results -----------------------------------------------------------------------------------
    def answer_event(self, key: str, message: Any, *, batch: bool, **where: Any) -> dict[str, Any]:
        req = self.reqs[key]
        tokens = usage_tokens(message.usage)
        text = "".join(getattr(b, "text", "") for b in message.content if getattr(b, "type", None) == "text")
        answer, invalid = self.job.parse(req, text, getattr(message, "stop_reason", None))
        ev = {"ev": "result", "key": key, "type": "succeeded", **where, **tokens, "usd": usd(tokens, self.p, batch)}
        ev["stop_reason"] = getattr(message, "stop_reason", None)
        if answer:
            ev[self.job.answer_field] = answer
        else:
            ev["invalid"] = invalid
            ev["text"] = text[:2000]  # kept to see what went wrong
            log.debug("invalid answer for %s: %s", key[:12], invalid)
        return ev

    @staticmethod
    def error_event(key: str, rtype: str, error_type: str | None, message: str | None, **where: Any) -> dict[str, Any]:
        ev = {"ev": "result", "key": key, "type": rtype, **where, "usd": 0.0}
        if error_type:
            ev["error_type"] = error_type
            ev["error"] = (message or "")[:300]
        return ev

    def batch_result_event(self, key: str, result: Any, sub: Submission) -> dict[str, Any]:
        where = {"mode": "batch", "sub": sub.sub, "batch_id": sub.batch_id}
        if result.type == "succeeded":
            return self.answer_event(key, result.message, batch=True, **where)
        if result.type == "errored":
            err = getattr(getattr(result, "error", None), "error", None)
            return self.error_event(key, "errored", getattr(err, "type", "api_error"), getattr(err, "message", ""), **where)
        return self.error_event(key, result.type, None, None, **where)  # canceled, expired: not billed

    # -- what to do --------------------------------------------------------------------------------
    def todo(self, attempts: Counter) -> list[str]:
        busy = {k for s in self.state.in_flight() for k in s.keys}
        return [
            k
            for k in self.reqs
            if k not in self.state.done and k not in busy and attempts[k] <= self.p.max_retries
            and not permanent_failure(self.state, k, self.job)
        ]

    def estimate(self, keys: list[str]) -> float:
        return sum(worst_case_usd(self.reqs[k].est_input_tokens, self.p, self.p.batch) for k in keys)

    def run(self) -> None:
        self.resume()
        attempts: Counter = Counter()
        for rnd in range(1 + self.p.max_retries):
            todo = self.todo(attempts)
            if not todo:
                return
            est = self.estimate(todo)
            spent = self.state.usd() if self.job.budget_over_ledger else self.state.usd(set(self.reqs))
            if spent + est > self.p.max_cost_usd:
                msg = (
                    f"{self.job.name}: {len(todo)} requests estimated at up to ${est:.2f} (inputs at ~3 characters"
                    f" per token, answers of max_tokens={self.p.max_tokens}) on top of ${spent:.2f} already spent"
                    f" exceed {self.job.budget_key}=${self.p.max_cost_usd:.2f}"
                )
                if rnd == 0:
                    raise UserError(f"{msg}; nothing submitted. Raise the budget, lower max_tokens or use fewer DAGs")
                log.warning("%s: not resubmitting the failed ones", msg)
                self.budget_stopped = True
                return
            if rnd:
                log.info("retry round %d: %d requests (errored, expired, canceled or invalid answers)", rnd, len(todo))
            log.info(
                "submitting %d requests (%s, %s): at most $%.2f, $%.2f spent so far",
                len(todo), self.p.model, "Message Batches" if self.p.batch else "live", est, spent,
            )  # fmt: skip
            if self.p.batch:
                self.submit_batches(todo)
                self.wait()
            else:
                self.live(todo)
            for k in todo:
                attempts[k] += 1

    # -- batches -----------------------------------------------------------------------------------
    def resume(self) -> None:
        """Settle what a previous run left: intents of unknown fate, then batches still running."""
        mine = set(self.reqs)
        for s in self.state.in_flight():
            if s.batch_id is None and mine & set(s.keys):
                found = self.find_batch(s)
                if found is not None:
                    log.info("found batch %s on the server for an interrupted submission: adopting it", found.id)
                    self.record({"ev": "submitted", "sub": s.sub, "batch_id": found.id, "adopted": True}, sync=True)
                    self.adopted += 1
                else:
                    log.info("an interrupted submission (%d requests) never reached the API", len(s.keys))
                    self.record({"ev": "abandoned", "sub": s.sub, "reason": "no such batch on the server"}, sync=True)
        self.wait()

    def find_batch(self, s: Submission) -> Any:
        """The batch the API created for an intent whose id we never wrote down, if any: created after the
        intent (less the clock slack), with the same number of requests, not already in the ledger."""
        known = {x.batch_id for x in self.state.subs.values() if x.batch_id}
        best = None
        for b in self.client.messages.batches.list(limit=100):
            created = b.created_at.timestamp()
            if created < s.ts - CLOCK_SLACK_S:
                break  # newest first: the rest are older
            c = b.request_counts
            total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
            if b.id not in known and total == len(s.keys):
                if best is None or abs(created - s.ts) < abs(best.created_at.timestamp() - s.ts):
                    best = b
        return best

    def create(self, s: Submission) -> tuple[Any, bool]:
        """Create the batch of an intent. Retries itself (the SDK's own retries are off here): after a 429 or
        529 nothing was created, but after a timeout or a 5xx it may have been, so it looks before retrying."""
        import anthropic

        requests = [{"custom_id": k, "params": self.reqs[k].body} for k in s.keys]
        client = self.client.with_options(max_retries=0)
        last = self.p.api_max_retries
        for attempt in range(last + 1):
            try:
                return client.messages.batches.create(requests=requests), False
            except (anthropic.RateLimitError, anthropic.OverloadedError) as exc:
                if (user := _api_user_error(exc)) is not None:
                    self.record({"ev": "abandoned", "sub": s.sub, "reason": str(user)}, sync=True)
                    raise user from None
                if attempt == last:
                    self.record({"ev": "abandoned", "sub": s.sub, "reason": f"http {exc.status_code}"}, sync=True)
                    raise UserError(
                        f"the Anthropic API refused the batch {attempt + 1} times ({exc.status_code} {exc.type});"
                        " rerun later: nothing was submitted"
                    ) from None
                time.sleep(_retry_after(exc, attempt))
            except (anthropic.APIConnectionError, anthropic.InternalServerError) as exc:
                found = self.find_batch(s)
                if found is not None:
                    return found, True
                if attempt == last:
                    raise UserError(
                        f"could not create the batch ({type(exc).__name__}); rerun: the ledger resumes it"
                    ) from None
                time.sleep(_retry_after(exc, attempt))
            except anthropic.APIStatusError as exc:
                self.record({"ev": "abandoned", "sub": s.sub, "reason": f"http {exc.status_code}"}, sync=True)
                raise (_api_user_error(exc) or UserError(
                    f"the Anthropic API refused the batch ({exc.status_code} {exc.type}): {exc.api_message}"
                )) from None  # fmt: skip
        raise AssertionError("unreachable")

    def submit_batches(self, keys: list[str]) -> None:
        for i in range(0, len(keys), self.p.batch_size):
            chunk = keys[i : i + self.p.batch_size]
            sub = uuid.uuid4().hex[:16]
            ev = self.record(
                {"ev": "intent", "sub": sub, "mode": "batch", "keys": chunk, "est_usd": round(self.estimate(chunk), 6)},
                sync=True,
            )
            s = self.state.subs[ev["sub"]]
            _checkpoint("before_create")
            batch, adopted = self.create(s)
            _checkpoint("after_create")
            self.record({"ev": "submitted", "sub": sub, "batch_id": batch.id, "adopted": adopted}, sync=True)
            _checkpoint("after_submitted")
            self.submitted += len(chunk)
            self.batches += 1
            log.info("batch %s: %d requests submitted", batch.id, len(chunk))

    def wait(self) -> None:
        """Poll the running batches until each ends, recording its results as soon as it does."""
        import anthropic

        mine = set(self.reqs)
        pending = [s for s in self.state.in_flight() if s.batch_id and mine & set(s.keys)]
        t0, last_log = time.monotonic(), 0.0
        while pending:
            for s in list(pending):
                try:
                    b = self.client.messages.batches.retrieve(s.batch_id)
                except anthropic.NotFoundError:
                    log.warning("batch %s is gone from the server: its requests will be sent again", s.batch_id)
                    self.record({"ev": "abandoned", "sub": s.sub, "reason": "batch not found"}, sync=True)
                    pending.remove(s)
                    continue
                _checkpoint("poll")
                if b.processing_status == "ended":
                    self.collect(s)
                    pending.remove(s)
            if pending:
                if time.monotonic() - last_log > 300 or not last_log:
                    last_log = time.monotonic()
                    log.info("%d batches running (%.0f min so far); a kill is safe: a rerun resumes",
                             len(pending), (last_log - t0) / 60)  # fmt: skip
                time.sleep(self.p.poll_seconds)

    def collect(self, s: Submission) -> None:
        """Record the results of an ended batch (JSONL, in any order), skipping those already recorded."""
        wanted = set(s.keys)
        n_new, first = 0, True
        for item in self.client.messages.batches.results(s.batch_id):
            key = item.custom_id
            if key not in wanted:
                if s.adopted and first:
                    log.warning("batch %s does not hold our requests: not adopting it", s.batch_id)
                    self.record({"ev": "rejected", "sub": s.sub, "batch_id": s.batch_id}, sync=True)
                    return
                log.warning("batch %s returned an unknown custom_id %s: ignored", s.batch_id, key[:16])
                continue
            first = False
            if key in self.state.seen[s.sub]:
                continue
            self.record(self.batch_result_event(key, item.result, s))
            n_new += 1
            _checkpoint("result")
        self.record({"ev": "finished", "sub": s.sub, "batch_id": s.batch_id}, sync=True)
        log.info("batch %s ended: %d results recorded", s.batch_id, n_new)

    # -- live calls --------------------------------------------------------------------------------
    def live_call(self, key: str) -> dict[str, Any]:
        import anthropic

        where = {"mode": "live"}
        try:
            msg = self.client.messages.create(**self.reqs[key].body)
        except anthropic.APIStatusError as exc:
            if (user := _api_user_error(exc)) is not None:
                raise user from None
            return self.error_event(key, "errored", exc.type or f"http_{exc.status_code}", exc.api_message, **where)
        except anthropic.APIConnectionError as exc:
            return self.error_event(key, "errored", "connection_error", type(exc).__name__, **where)
        return self.answer_event(key, msg, batch=False, **where)

    def live(self, keys: list[str]) -> None:
        ex = ThreadPoolExecutor(self.p.concurrency, thread_name_prefix="anthropic")
        try:
            futures = [ex.submit(self.live_call, k) for k in keys]
            for i, fut in enumerate(as_completed(futures), 1):
                self.record(fut.result())  # the main thread writes the ledger: no lock needed
                self.submitted += 1
                _checkpoint("result")
                if i % 100 == 0:
                    log.info("live: %d/%d answered", i, len(keys))
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def run_requests(reqs: dict[str, Request], params: AnthropicParams, ledger_dir: Path,
                 job: Job = INSTRUCT) -> tuple[State, _Run | None, int]:
    """Ask for every request not answered in the ledger yet (resuming what a killed run left); returns the
    ledger's state, the run (None when nothing was asked) and how many requests the ledger answered already."""
    with Ledger(ledger_dir) as ledger:
        state = State.replay(ledger.events())
        reused = sum(1 for k in reqs if k in state.done)
        log.info("%s: %d answered in the ledger already, %d not yet (%s, %s)", job.name, reused, len(reqs) - reused,
                 params.model, "batch" if params.batch else "live")
        run = None
        # The API (and so the key) is needed only if something is left to ask.
        if any(k not in state.done and not permanent_failure(state, k, job) for k in reqs):
            run = _Run(make_client(params, job.switch_off), ledger, state, params, reqs, job)
            run.run()
    return state, run, reused


def _metrics(
    reqs: dict[str, Request], state: State, params: InstructParams, run: _Run | None, reused: int, n_pairs: int, n_dags: int
) -> dict[str, Any]:
    results = [r for k in reqs for r in state.results.get(k, [])]
    tok = Counter()
    for r in results:
        for f in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            tok[f] += r.get(f, 0)
    spent = sum(r.get("usd", 0.0) for r in results)
    live_one = sum(live_one_per_instruction_usd(state.done[k], len(reqs[k].variants), params) for k in reqs if k in state.done)
    failed = [k for k in reqs if k not in state.done]
    why = Counter()
    for k in failed:
        last = (state.results.get(k) or [{}])[-1]
        why[last.get("invalid") or last.get("error_type") or last.get("type") or "not_submitted"] += 1
    invalid = Counter(r["invalid"] for r in results if r.get("invalid"))
    n_failed_dags = sum(len(reqs[k].records) for k in failed)
    return {
        "provider": "anthropic",
        "model": params.model,
        "mode": "batch" if params.batch else "live",
        "prompt_version": PROMPT_VERSION,
        "per_request": params.per_request,
        "dags": n_dags,
        "instructions": n_pairs,
        "requests": len(results),
        "requests_this_run": run.submitted if run else 0,
        "requests_reused": reused,
        "batches_this_run": run.batches if run else 0,
        "results": dict(Counter(r["type"] for r in results)),
        "invalid_answers": sum(invalid.values()),
        "invalid_reasons": dict(invalid),
        "failed_dags": n_failed_dags,
        "failed_reasons": dict(why),
        "input_tokens": tok["input_tokens"],
        "output_tokens": tok["output_tokens"],
        "cache_tokens": tok["cache_creation_input_tokens"] + tok["cache_read_input_tokens"],
        "usd": round(spent, 6),
        "usd_per_1k_instructions": round(1000 * spent / n_pairs, 6) if n_pairs else None,
        "usd_if_live_one_per_instruction": round(live_one, 6),
        "cost_ratio_vs_live_one_per_instruction": round(spent / live_one, 4) if live_one else None,
        "budget_usd": params.max_cost_usd,
        "budget_stopped": bool(run and run.budget_stopped),
        "filters": {"invalid_answer": sum(invalid.values()), "failed_dags": n_failed_dags},
    }


def anthropic_pairs(
    records: list[dict[str, Any]], params: InstructParams, seed: int, out_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Instructions for every record from Claude; returns (pairs, metrics).

    The ledger lives in ``out_dir/ledger``; answers already there are reused without the API (and without
    a key). ``seed`` is unused: the API has no seed, and the ledger is what makes reruns reproducible.
    """
    del seed
    reqs = build_requests(records, params)
    log.info("anthropic: %d DAGs, %d distinct requests", len(records), len(reqs))
    state, run, reused = run_requests(reqs, params, Path(out_dir) / LEDGER_DIR)
    pairs = []
    for rec in records:
        key = request_key(rec["source"], int(rec.get("airflow") or 3), params)
        done = state.done.get(key)
        if done:
            for variant, text in zip(reqs[key].variants, done["instructions"], strict=True):
                p = pair(rec, text, variant, "anthropic")
                p["model"] = params.model
                pairs.append(p)
    metrics = _metrics(reqs, state, params, run, reused, len(pairs), len(records))
    if not pairs:
        raise UserError(f"no DAG got valid instructions from {params.model}: {metrics['failed_reasons']} (see {out_dir}/{LEDGER_DIR})")
    if metrics["failed_dags"]:
        log.warning("%d DAGs without instructions after retries: %s", metrics["failed_dags"], metrics["failed_reasons"])
    log.info(
        "anthropic: %d instructions, $%.4f in all ($%.4f per 1,000 instructions; %.0f%% of one live request per instruction)",
        len(pairs), metrics["usd"], metrics["usd_per_1k_instructions"] or 0,
        100 * (metrics["cost_ratio_vs_live_one_per_instruction"] or 0),
    )  # fmt: skip
    return pairs, metrics
