"""Where the judge's answers come from; each backend maps ``{key: (system, user)}`` to ``{key: result}`` (the
parsed ``{"score", "reason"}`` or ``{"failure": why}``) plus the facts of the run (requests, tokens, cost).

- ``anthropic``: Message Batches through the instruct stage's machinery (``data/anthropic_provider.run_requests``):
  an append-only ledger in ``evaluate.judge_cache``/anthropic, so a rerun (or a run after a kill) reuses every
  submitted batch and recorded answer and never pays twice; the cost guard refuses to submit when what was
  spent on these requests plus the worst case for the rest exceeds ``evaluate.judge_max_cost_usd``.
- ``openai``: any OpenAI-compatible endpoint through ``generate/endpoint.py``'s client (bounded concurrency,
  retries with backoff), answers cached in ``evaluate.judge_cache``/openai by (model, prompt hash): reruns ask
  nothing again, and a kill loses at most the ``judge_concurrency`` answers in flight. No cost guard: the
  endpoint is taken to be self-hosted (its cost is its machine time, reported as seconds).

An unparsable answer is final for both: counted as a failure, not asked again (a rerun does not pay for it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_net.data.anthropic_ledger import Ledger, State
from airflow_net.evaluate.judge import SCHEMA, parse_verdict
from airflow_net.params import AnthropicParams, EvaluateParams

log = logging.getLogger(__name__)

Results = dict[str, dict[str, Any]]


def _failure(state: State, key: str) -> str:
    last = (state.results.get(key) or [{}])[-1]
    return last.get("invalid") or last.get("error_type") or last.get("type") or "not_submitted"


def _results(state: State, keys: list[str]) -> Results:
    return {k: dict(state.done[k]["answer"]) if k in state.done else {"failure": _failure(state, k)} for k in keys}


def _tokens(state: State, keys: list[str], *fields: str) -> dict[str, int]:
    return {f: sum(r.get(f, 0) for k in keys for r in state.results.get(k, [])) for f in fields}


def anthropic_params(e: EvaluateParams) -> AnthropicParams:
    """The Anthropic client settings of the judge: Message Batches, the judge's model, prices and budget."""
    return AnthropicParams(model=e.judge_model, batch=True, max_cost_usd=e.judge_max_cost_usd,
                           max_tokens=e.judge_max_tokens, poll_seconds=e.judge_poll_seconds,
                           price_input_per_mtok=e.judge_price_input_per_mtok,
                           price_output_per_mtok=e.judge_price_output_per_mtok)


def anthropic_judge(prompts: dict[str, tuple[str, str]], e: EvaluateParams) -> tuple[Results, dict[str, Any]]:
    from airflow_net.data.anthropic_prompt import estimate_input_tokens
    from airflow_net.data.anthropic_provider import Job, Request, run_requests

    def parse(req: Request, text: str, stop_reason: str | None) -> tuple[Any, str | None]:
        return parse_verdict(text, stop_reason)

    job = Job("evaluate judge", "evaluate.judge_max_cost_usd", "evaluate.judge: none", parse, "answer",
              retry_invalid=False, budget_over_ledger=False)
    p = anthropic_params(e)
    reqs = {}
    for k, (system, user) in prompts.items():
        body = {"model": p.model, "max_tokens": p.max_tokens, "system": system,
                "messages": [{"role": "user", "content": user}],
                "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}
        reqs[k] = Request(k, body, estimate_input_tokens(body))
    state, run, reused = run_requests(reqs, p, Path(e.judge_cache) / "anthropic", job)
    keys = list(reqs)
    facts = {"requests": len(keys), "requests_this_run": run.submitted if run else 0, "requests_reused": reused,
             "batches_this_run": run.batches if run else 0,
             "invalid_answers": sum(1 for k in keys for r in state.results.get(k, []) if r.get("invalid")),
             **_tokens(state, keys, "input_tokens", "output_tokens"),
             "usd": round(state.usd(set(keys)), 6), "budget_usd": p.max_cost_usd}
    log.info("judge: $%.4f for %d requests (%d asked in this run, %d from the ledger)", facts["usd"], len(keys),
             facts["requests_this_run"], reused)
    return _results(state, keys), facts


def openai_judge(prompts: dict[str, tuple[str, str]], e: EvaluateParams) -> tuple[Results, dict[str, Any]]:
    from airflow_net.generate.endpoint import endpoint_backend

    assert e.judge_endpoint  # the params validator makes sure
    keys = list(prompts)
    asked, t0 = 0, time.perf_counter()
    with Ledger(Path(e.judge_cache) / "openai") as ledger:
        state = State.replay(ledger.events())
        todo = [k for k in keys if k not in state.results]  # answered (valid or not) once: final
        reused = len(keys) - len(todo)
        log.info("judge: %d answers cached, %d to ask %s (%s)", reused, len(todo), e.judge_endpoint, e.judge_model)
        if todo:
            complete = endpoint_backend(e.judge_endpoint, model=e.judge_model, max_tokens=e.judge_max_tokens,
                                        api_key_env=e.judge_api_key_env, concurrency=e.judge_concurrency)
            # One chunk of `concurrency` requests at a time, each answer written before the next chunk goes out.
            step = e.judge_concurrency
            for start in range(0, len(todo), step):
                chunk = todo[start:start + step]
                convs = [[{"role": "system", "content": prompts[k][0]}, {"role": "user", "content": prompts[k][1]}]
                         for k in chunk]
                for k, out in zip(chunk, complete(convs, temperature=0.0, seed=0), strict=True):
                    answer, invalid = parse_verdict(out["text"], out.get("finish_reason"))
                    ev = {"ev": "result", "key": k, "type": "succeeded", "mode": "live",
                          "input_tokens": out["prompt_tokens"], "output_tokens": out["completion_tokens"],
                          "seconds": out["seconds"], "usd": 0.0}
                    if answer:
                        ev["answer"] = answer
                    else:
                        ev |= {"invalid": invalid, "text": out["text"][:2000]}
                    state.apply(ledger.append(ev))
                asked += len(chunk)
                if asked % (20 * step) < step:
                    log.info("judge: %d/%d answered", asked, len(todo))
    facts = {"requests": len(keys), "requests_this_run": asked, "requests_reused": reused,
             "invalid_answers": sum(1 for k in keys for r in state.results.get(k, []) if r.get("invalid")),
             **_tokens(state, keys, "input_tokens", "output_tokens"),
             "seconds_this_run": round(time.perf_counter() - t0, 2)}
    return _results(state, keys), facts


BACKENDS: dict[str, Callable[[dict[str, tuple[str, str]], EvaluateParams], tuple[Results, dict[str, Any]]]] = {
    "anthropic": anthropic_judge,
    "openai": openai_judge,
}
