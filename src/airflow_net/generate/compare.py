"""Strategies side by side: the same test requests, describer-written and person-style, through one strategy.

``compare_requests`` picks the requests (a seeded sample of the test split, and a person-style request written
by the noiser for each of their DAGs), ``run_requests`` answers them with a strategy, and ``summarise`` turns
the answers into the numbers a reader compares strategies by: valid rate and structural scores with 95%
intervals, and what each request and each valid DAG cost (wall time, generated tokens, candidates, rounds) —
Prompt2DAG's "cost per successful DAG".
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from airflow_net.data.noiser import noisy_request
from airflow_net.data.prepare import to_messages
from airflow_net.data.spec import DagSpec
from airflow_net.evaluate.metrics import judge
from airflow_net.evaluate.stats import bootstrap_ci
from airflow_net.generate.strategies import Backend, Judge, run_strategy

GROUPS = ("describer", "person")
SCORES = ("valid", "structural_f1", "task_f1", "edge_f1", "dag_id_match")


def pick_per_dag(test_rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of n test rows with a spec, one request per DAG: more DAGs, a fairer sample (fewer when the
    split has fewer DAGs)."""
    rows = sorted((r for r in test_rows if r.get("spec")), key=lambda r: (r["uid"], r.get("variant") or ""))
    random.Random(seed).shuffle(rows)
    picked, seen = [], set()
    for r in rows:
        if r["uid"] not in seen:
            seen.add(r["uid"])
            picked.append(r)
        if len(picked) == n:
            break
    return picked


def compare_requests(test_rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """n describer-written test requests (seeded, one per DAG first) and, for the same DAGs, n person-style ones."""
    picked = pick_per_dag(test_rows, n, seed)
    out = []
    for r in picked:
        request = next(m["content"] for m in r["messages"] if m["role"] == "user")
        base = {"uid": r["uid"], "spec": r["spec"], "airflow": r.get("airflow", 3)}
        out.append(base | {"group": "describer", "variant": r.get("variant"), "request": request})
    for r in picked:
        person = noisy_request(DagSpec.from_dict(r["spec"]), random.Random(f"{seed}:{r['uid']}:person"))
        out.append({"uid": r["uid"], "spec": r["spec"], "airflow": r.get("airflow", 3), "group": "person",
                    "variant": "person", "request": person})
    return out


def run_requests(strategy: str, requests: list[dict[str, Any]], backend: Backend, judges: dict[int, Judge], *,
                 system_prompt: str, progress: Callable[[], Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """Each request through ``strategy``; one row per request: the answer, its scores and its cost."""
    rows = []
    for req in requests:
        t0 = time.perf_counter()
        out = run_strategy(strategy, to_messages(system_prompt, req["request"]), backend, judges[req["airflow"]],
                           airflow=req["airflow"], **kw)
        seconds = time.perf_counter() - t0
        j = judge(out.code, req["spec"], airflow=req["airflow"])  # the code returned (fixed, when autofix)
        rows.append({
            "uid": req["uid"], "group": req["group"], "variant": req["variant"], "request": req["request"],
            "text": out.text, "valid": j.valid, "structural_f1": j.structural_f1, "task_f1": j.task_f1,
            "edge_f1": j.edge_f1, "dag_id_match": j.dag_id_match, "candidates": out.candidates, "rounds": out.rounds,
            "completion_tokens": out.completion_tokens, "fallback": out.fallback, "seconds": seconds,
        })
        if progress is not None:
            progress()
    return rows


def summarise(rows: list[dict[str, Any]], *, resamples: int, seed: int) -> dict[str, Any]:
    """Per request group: scores with 95% bootstrap intervals, and the cost per request and per valid DAG."""
    out: dict[str, Any] = {}
    for group in (*GROUPS, "all"):
        sel = [r for r in rows if group in ("all", r["group"])]
        if not sel:
            continue
        n = len(sel)
        m: dict[str, Any] = {"n": n}
        for key in SCORES:
            vals = [float(r[key]) for r in sel]
            lo, hi = bootstrap_ci(vals, resamples, seed)
            name = "valid_rate" if key == "valid" else key
            m[name], m[f"{name}_lo"], m[f"{name}_hi"] = round(sum(vals) / n, 4), round(lo, 4), round(hi, 4)
        valid = sum(bool(r["valid"]) for r in sel)
        secs = sum(r["seconds"] for r in sel)
        toks = sum(r["completion_tokens"] for r in sel)
        m |= {
            "seconds_per_request": round(secs / n, 3),
            "tokens_per_request": round(toks / n, 1),
            # Prompt2DAG's cost per successful DAG; null when none was valid (an infinite cost)
            "seconds_per_valid_dag": round(secs / valid, 3) if valid else None,
            "tokens_per_valid_dag": round(toks / valid, 1) if valid else None,
            "candidates_per_request": round(sum(r["candidates"] for r in sel) / n, 2),
            "rounds_per_request": round(sum(r["rounds"] for r in sel) / n, 2),
            "fallback_rate": round(sum(bool(r["fallback"]) for r in sel) / n, 4),
        }
        out[group] = m
    return out
