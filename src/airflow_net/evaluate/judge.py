"""An LLM judge of instruction following: a 1-5 rubric score and a one-line reason for each generated DAG.

The judge reads the request and the generated code (it never runs the code) and answers with a JSON object
``{"score": <1-5>, "reason": "<one line>"}``. Answers are parsed strictly: anything else (prose, a score out
of range, extra fields, a cut-off answer) is recorded as a failure with its reason, counted and never guessed.

The same seeded sample of requests is judged for both models, so the mean scores are paired: a paired bootstrap
tests fine-tuned against base, and Spearman's rank correlation says how far the judge agrees with the
structural F1 (an independent, exact measure of the same thing, on the same answers).

Where the answers come from (``evaluate/judge_backends.py``): Claude through Message Batches, with the instruct
stage's ledger, resume and cost guard, or any OpenAI-compatible endpoint, cached by (model, prompt hash).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import numpy as np

from airflow_net.evaluate.airflow_sample import sample_indices
from airflow_net.evaluate.stats import bootstrap_ci, paired_bootstrap, rank_agreement
from airflow_net.params import EvaluateParams
from airflow_net.utils import UserError, sha256_text

log = logging.getLogger(__name__)

SYSTEM = (
    "You grade how well an Apache Airflow DAG file follows the request it was written for. Judge instruction"
    " following only: does the code build what the request asks for (the DAG id, the tasks and what each one runs,"
    " their order, the schedule, and every setting the request names, such as the start date, retries, owner,"
    " tags, catchup and the Airflow version)? Read the code; do not run it. Code that does more than asked is"
    " fine unless it contradicts the request."
)

RUBRIC = (
    ("5", "does everything the request asks; nothing contradicts it"),
    ("4", "one small detail is missing or wrong (a setting, a name, the schedule's form)"),
    ("3", "the requested pipeline is there, but several details are missing or wrong"),
    ("2", "only part of the request is addressed: tasks missing, wrong order, wrong schedule"),
    ("1", "unrelated to the request, empty, or not a DAG"),
)

USER_TEMPLATE = """<request>
{instruction}
</request>

<dag>
{code}
</dag>

Grade how well the DAG follows the request, on this scale:
{rubric}
Answer with a JSON object only, of this form: {{"score": <an integer from 1 to 5>, "reason": "<one line: the main \
reason for the score>"}}"""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer"}, "reason": {"type": "string"}},
    "required": ["score", "reason"],
    "additionalProperties": False,
}

# The prompt's identity: a change to the wording gives new cache keys, so old answers are not reused for it.
PROMPT_VERSION = sha256_text(json.dumps([SYSTEM, USER_TEMPLATE, RUBRIC, SCHEMA]))[:16]
MODELS = ("base", "finetuned")
EXAMPLES = 2  # reasons quoted in the report


def messages(instruction: str, code: str) -> tuple[str, str]:
    """The judge's system prompt and user message for one (request, generated DAG)."""
    rubric = "\n".join(f"{s}: {words}" for s, words in RUBRIC)
    return SYSTEM, USER_TEMPLATE.format(instruction=instruction.strip(), code=code.strip(), rubric=rubric)


def request_key(model: str, system: str, user: str, max_tokens: int) -> str:
    """Content hash of everything that shapes the answer: the judge model and the whole prompt (the ledger key
    and the batch custom_id: 64 hex characters, the API's limit)."""
    ident = {"judge": PROMPT_VERSION, "model": model, "system": system, "user": user, "max_tokens": max_tokens}
    return sha256_text(json.dumps(ident, sort_keys=True))


def parse_verdict(text: str, stop_reason: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """``({"score", "reason"}, None)`` for a valid answer, else ``(None, why)``: bad_json, bad_fields, bad_score,
    no_reason, truncated or refusal. A JSON object alone (optionally in one ```json fence) is the only form taken."""
    if stop_reason == "refusal":
        return None, "refusal"
    t = text.strip()
    if t.startswith("```") and t.endswith("```") and t.count("```") == 2:
        t = t[3:-3].removeprefix("json").strip()
    try:
        obj = json.loads(t)
    except (json.JSONDecodeError, ValueError):
        return None, "truncated" if stop_reason in ("max_tokens", "length") else "bad_json"
    if not isinstance(obj, dict) or set(obj) != {"score", "reason"}:
        return None, "bad_fields"
    score, reason = obj["score"], obj["reason"]
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        return None, "bad_score"
    reason = " ".join(reason.split()) if isinstance(reason, str) else ""
    if not reason:
        return None, "no_reason"
    return {"score": score, "reason": reason}, None


def _model_summary(scores: dict[int, int], failures: Counter, f1: dict[int, float], n: int, resamples: int,
                   seed: int) -> dict[str, Any]:
    vals = [scores[i] for i in sorted(scores)]
    out: dict[str, Any] = {"n": n, "scored": len(vals), "failures": sum(failures.values()),
                           "failure_reasons": dict(sorted(failures.items()))}
    if vals:
        lo, hi = bootstrap_ci(vals, resamples, seed)
        out |= {"mean_score": round(float(np.mean(vals)), 4), "mean_score_lo": round(lo, 4),
                "mean_score_hi": round(hi, 4),
                "score_counts": {str(s): vals.count(s) for s in range(1, 6)},
                # does the judge rank answers as the exact structural match does?
                "rank_agreement_f1": rank_agreement(vals, [f1[i] for i in sorted(scores)])}
    return out


def summarize(results: dict[str, dict[int, dict[str, Any]]], f1: dict[str, dict[int, float]], n: int,
              resamples: int, seed: int) -> dict[str, Any]:
    """Per model: mean score [95% CI], score counts, failures, rank agreement with F1; and the paired test.

    ``results[which][i]`` is ``{"score", "reason"}`` or ``{"failure": why}`` for sampled row ``i``."""
    out: dict[str, Any] = {}
    scores: dict[str, dict[int, int]] = {}
    for which in MODELS:
        scores[which] = {i: r["score"] for i, r in results[which].items() if "score" in r}
        failures = Counter(r["failure"] for r in results[which].values() if "failure" in r)
        out[which] = _model_summary(scores[which], failures, f1[which], n, resamples, seed)
    both = sorted(set(scores["base"]) & set(scores["finetuned"]))
    if both:
        t = paired_bootstrap([scores["base"][i] for i in both], [scores["finetuned"][i] for i in both], resamples, seed)
        out["test"] = {**t, "n": len(both), "test": "paired bootstrap", "significant": t["p_value"] < 0.05}
    return out


def examples(results: dict[int, dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two reasons to quote: the lowest- and the highest-scored answer (the first in uid order of each)."""
    scored = sorted((i for i, r in results.items() if "score" in r), key=lambda i: (rows[i]["uid"], rows[i]["variant"]))
    if not scored:
        return []
    picks = [min(scored, key=lambda i: results[i]["score"]), max(scored, key=lambda i: results[i]["score"])]
    picks = list(dict.fromkeys(picks))[:EXAMPLES]
    return [{"uid": rows[i]["uid"], "variant": rows[i]["variant"], **results[i]} for i in picks]


def run_judge(generated: dict[str, list[dict[str, Any]]], per_model: dict[str, list[dict[str, Any]]],
              e: EvaluateParams) -> tuple[dict[str, Any], dict[str, dict[int, dict[str, Any]]], dict[str, Any]]:
    """Judge a seeded sample of requests for both models; returns (metrics for eval.json ``judge``, the
    per-answer results by model and row, examples for the report).

    ``generated`` are the generate stage's rows (with ``instruction``), ``per_model`` the evaluated rows in the
    same order (with ``code``, ``structural_f1``, ``uid``, ``variant``)."""
    from airflow_net.evaluate.judge_backends import BACKENDS

    n_rows = len(per_model["base"])
    idx = sample_indices(n_rows, e.judge_sample or n_rows, e.bootstrap_seed)
    prompts: dict[str, tuple[str, str]] = {}
    keys: dict[str, dict[int, str]] = {which: {} for which in MODELS}
    for which in MODELS:
        for i in idx:
            instruction = generated[which][i].get("instruction")
            if not instruction:
                raise UserError(f"{which} answer {i} ({per_model[which][i]['uid']}) has no 'instruction': the judge"
                                " needs the request; expected data/generated rows written by the generate stage")
            system, user = messages(instruction, per_model[which][i]["code"])
            k = request_key(e.judge_model, system, user, e.judge_max_tokens)
            prompts[k] = (system, user)
            keys[which][i] = k
    log.info("judge (%s, %s): %d answers per model, %d distinct prompts", e.judge, e.judge_model, len(idx), len(prompts))
    answers, run = BACKENDS[e.judge](prompts, e)
    results = {which: {i: answers[k] for i, k in keys[which].items()} for which in MODELS}
    f1 = {which: {i: float(per_model[which][i]["structural_f1"]) for i in idx} for which in MODELS}
    metrics = {"provider": e.judge, "model": e.judge_model, "prompt_version": PROMPT_VERSION,
               **summarize(results, f1, len(idx), e.bootstrap_resamples, e.bootstrap_seed), "run": run}
    for which in MODELS:
        log.info("judge %s: %s", which, {k: v for k, v in metrics[which].items() if k != "score_counts"})
    ex = {which: examples(results[which], per_model[which]) for which in MODELS}
    return metrics, results, ex
