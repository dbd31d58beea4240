"""One evaluation run, base vs fine-tuned: per-answer judgements, rates with intervals, paired tests,
error classes with an example each, and breakdowns by request style and complexity."""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable
from typing import Any

from airflow_net.evaluate.airflow_sample import airflow_sample as run_airflow_sample
from airflow_net.evaluate.breakdown import breakdown, code_facts, request_facts
from airflow_net.evaluate.errors import ERROR_CLASSES, classify
from airflow_net.evaluate.metrics import Judgement, aggregate, extract_code, judge
from airflow_net.evaluate.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap

log = logging.getLogger(__name__)

MODELS = ("base", "finetuned")
HEADLINE = ("parse_rate", "valid_rate", "structural_f1", "task_f1", "edge_f1", "dag_id_match", "schedule_match")
# per-answer column behind each headline mean
COLUMN = {"parse_rate": "parsed", "valid_rate": "valid", "structural_f1": "structural_f1", "task_f1": "task_f1",
          "edge_f1": "edge_f1", "dag_id_match": "dag_id_match", "schedule_match": "schedule_match"}
BINARY = ("parse_rate", "valid_rate", "dag_id_match", "schedule_match")  # exact McNemar; the rest paired bootstrap
REQUEST_FACTS = ("tasks", "taskgroups", "xcom", "sensors", "style", "airflow")
CODE_FACTS = ("lines", "cyclomatic")
SNIPPET_LINES = 12


def judge_rows(rows: list[dict[str, Any]], airflow: int) -> tuple[list[dict[str, Any]], list[Judgement]]:
    """One flat row per answer (the judgement, its error classes, its request/code facts) and the judgements."""
    out, judgements = [], []
    for r in rows:
        code = extract_code(r["text"])
        spec = r.get("spec")
        j = judge(code, spec, airflow=airflow)
        classes = classify(code, spec, j.error_codes + j.warning_codes, r.get("finish_reason"))
        row = {"uid": r["uid"], "variant": r.get("variant") or "unknown", **j.to_row(),
               "parse_rate": float(j.parsed), "valid_rate": float(j.valid),
               "classes": classes, "code": code,
               **{f"req_{k}": v for k, v in request_facts(spec).items()},
               **{f"code_{k}": v for k, v in code_facts(code).items()},
               "completion_tokens": r.get("completion_tokens"), "finish_reason": r.get("finish_reason")}
        out.append(row)
        judgements.append(j)
    return out, judgements


def _with_interval(d: dict[str, Any], key: str, values: list[float], resamples: int, seed: int) -> None:
    lo, hi = bootstrap_ci(values, resamples, seed)
    d[f"{key}_lo"], d[f"{key}_hi"] = round(lo, 4), round(hi, 4)


def model_metrics(rows: list[dict[str, Any]], raw: list[dict[str, Any]], judgements: list,
                  resamples: int, seed: int) -> dict[str, Any]:
    m = aggregate(judgements, raw)
    for key in HEADLINE:
        _with_interval(m, key, [float(r[COLUMN[key]]) for r in rows], resamples, seed)
    classes: dict[str, float] = {}
    for cls in ERROR_CLASSES:
        hits = [float(cls in r["classes"]) for r in rows]
        classes[cls] = round(sum(hits) / len(hits), 4)
        _with_interval(classes, cls, hits, resamples, seed)
    m["error_classes"] = classes
    m["by_variant"] = breakdown(rows, lambda r: r["variant"])
    m["by_request"] = {f: breakdown(rows, lambda r, f=f: r.get(f"req_{f}")) for f in REQUEST_FACTS}
    m["by_code"] = {f: breakdown(rows, lambda r, f=f: r.get(f"code_{f}")) for f in CODE_FACTS}
    return m


def autofixed_metrics(raw: list[dict[str, Any]], airflow: int, resamples: int, seed: int) -> dict[str, Any]:
    """The headline rates (with intervals) and error counts of the same answers after dagcheck's fixes
    (``dagcheck.fix.fix_source``, what ``generate.autofix`` does before `airflow-net generate` returns an answer):
    the model's answers as a user gets them. The raw rates stay the model's own."""
    from airflow_net.dagcheck.fix import fix_source

    judgements = [judge(fix_source(extract_code(r["text"]), airflow=airflow, drop_unknown=True).source, r.get("spec"),
                        airflow=airflow) for r in raw]
    m = {k: v for k, v in aggregate(judgements).items() if k in ("n", *HEADLINE, "errors")}
    for key in HEADLINE:
        _with_interval(m, key, [float(getattr(j, COLUMN[key])) for j in judgements], resamples, seed)
    return m


def paired_tests(a: list[dict[str, Any]], b: list[dict[str, Any]], resamples: int, seed: int) -> dict[str, Any]:
    """Fine-tuned (b) vs base (a) on the same requests in the same order."""
    keys_a = [(r["uid"], r["variant"]) for r in a]
    if keys_a != [(r["uid"], r["variant"]) for r in b]:
        raise ValueError("base and fine-tuned answers are not for the same requests in the same order; "
                         "expected data/generated/{base,finetuned}.jsonl from one generate run")
    out: dict[str, Any] = {}
    for key in HEADLINE:
        col = COLUMN[key]
        if key in BINARY:
            t = mcnemar_exact([bool(r[col]) for r in a], [bool(r[col]) for r in b])
            t["test"] = "exact McNemar"
        else:
            t = paired_bootstrap([float(r[col]) for r in a], [float(r[col]) for r in b], resamples, seed)
            t["test"] = "paired bootstrap"
        t["significant"] = t["p_value"] < 0.05
        out[key] = t
    return out


def examples(rows: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The first answer (in uid order) in each error class: its uid, what fired, and the code's opening lines."""
    out: dict[str, dict[str, str]] = {}
    for r in sorted(rows, key=lambda r: (r["uid"], r["variant"])):
        for cls, detail in r["classes"].items():
            if cls not in out:
                out[cls] = {"uid": r["uid"], "variant": r["variant"], "detail": detail,
                            "snippet": "\n".join(r["code"].splitlines()[:SNIPPET_LINES])}
    return dict(sorted(out.items()))


def training_syntax_rate(sft_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The share of the SFT answers (what the model learned from) that are not valid Python."""
    codes = [extract_code(m["content"]) for r in sft_rows for m in r.get("messages", []) if m["role"] == "assistant"]
    bad = 0
    for c in codes:
        try:
            ast.parse(c)
        except (SyntaxError, ValueError):
            bad += 1
    return {"n": len(codes), "syntax_error_rate": round(bad / len(codes), 4) if codes else None}


def evaluate(generated: dict[str, list[dict[str, Any]]], airflow: int, resamples: int, seed: int,
             sft_train: list[dict[str, Any]] | None = None,
             airflow_sample: int = 0, judge: Callable[..., tuple] | None = None
             ) -> tuple[dict[str, Any], list[dict[str, Any]], dict]:
    """Metrics (for metrics/eval.json), per-answer CSV rows and per-class examples, for base and fine-tuned.

    ``judge`` (``judge.run_judge`` with its params bound), when given, adds ``judge`` to the metrics, a score
    and reason (or failure) column to the CSV and two quoted reasons per model to the examples."""
    metrics: dict[str, Any] = {}
    per_model: dict[str, list[dict[str, Any]]] = {}
    csv_rows: list[dict[str, Any]] = []
    ex: dict[str, Any] = {}
    for which in MODELS:
        raw = generated[which]
        if not raw:
            raise ValueError(f"no generated answers for {which}; expected a non-empty {which}.jsonl")
        rows, judgements = judge_rows(raw, airflow)
        per_model[which] = rows
        metrics[which] = model_metrics(rows, raw, judgements, resamples, seed)
        ex[which] = examples(rows)
        for r in rows:
            csv_rows.append({"model": which, **{k: v for k, v in r.items() if k not in ("code", "classes",
                                                                                          "parse_rate",
                                                                                          "valid_rate")},
                             "error_classes": " ".join(sorted(r["classes"]))})
        log.info("%s: %s", which, {k: metrics[which][k] for k in HEADLINE})
    metrics["finetuned_autofix"] = autofixed_metrics(generated["finetuned"], airflow, resamples, seed)
    log.info("finetuned after autofix: %s", {k: metrics["finetuned_autofix"][k] for k in HEADLINE})
    metrics["gain"] = {k: round(metrics["finetuned"][k] - metrics["base"][k], 4) for k in HEADLINE}
    metrics["tests"] = paired_tests(per_model["base"], per_model["finetuned"], resamples, seed)
    metrics["training"] = training_syntax_rate(sft_train) if sft_train is not None else {}
    metrics["airflow_sample"] = run_airflow_sample(per_model, airflow_sample, airflow, seed, resamples)
    metrics["bootstrap"] = {"resamples": resamples, "seed": seed, "confidence": 0.95}
    if judge is not None:
        metrics["judge"], results, ex["judge"] = judge(generated, per_model)
        by_model = {which: [r for r in csv_rows if r["model"] == which] for which in MODELS}
        for which, rows in by_model.items():
            for i, r in enumerate(rows):
                res = results[which].get(i, {})  # rows outside the judged sample stay empty
                r["judge_score"] = res.get("score")
                r["judge_reason"] = res.get("reason") or res.get("failure")
    return metrics, csv_rows, ex
