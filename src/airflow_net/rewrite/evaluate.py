"""Scoring rewrites: eval_loss (teacher-forced), ROUGE-L F, exact match and, for canonical targets, the
structural F1 of the parsed rewrite against the gold spec (the DAG evaluation's ``facts``/``prf``)."""

from __future__ import annotations

from typing import Any

import torch

from airflow_net.data.canonical import CanonicalError, parse_canonical
from airflow_net.data.spec import DagSpec, DagStructure
from airflow_net.evaluate.metrics import facts, prf
from airflow_net.rewrite.train import rouge_l


@torch.no_grad()
def eval_loss(model, tok, rows: list[dict], *, batch_size: int = 32, max_source_len: int = 192,
              max_target_len: int = 128) -> float:
    """Mean token cross-entropy of the gold rewrites (the Trainer's eval_loss, weighted by tokens)."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(rows), batch_size):
        b = rows[i:i + batch_size]
        enc = tok([r["query"] for r in b], return_tensors="pt", padding=True, truncation=True, max_length=max_source_len)
        lab = tok(text_target=[r["rewrite"] for r in b], return_tensors="pt", padding=True, truncation=True,
                  max_length=max_target_len)["input_ids"]
        lab[lab == tok.pad_token_id] = -100
        k = int((lab != -100).sum())
        total += float(model(**enc, labels=lab).loss) * k
        n += k
    return total / max(1, n)


def structural_f1(rewrite: str, spec: dict[str, Any]) -> tuple[float, bool]:
    """(F1 of the rewrite's facts vs the spec's, whether it parsed); an unparsable rewrite scores 0."""
    gold = DagSpec.from_dict(spec).structure()
    try:
        c = parse_canonical(rewrite)
    except CanonicalError:
        return 0.0, False
    got = DagStructure(dag_id=c.dag_id, schedule=c.schedule, tasks=c.tasks, edges=set(c.edges))
    return prf(facts(got), facts(gold))[2], True


def score(preds: list[str], rows: list[dict], loss: float | None) -> tuple[dict[str, Any], list[dict]]:
    """Scores of ``preds`` against the rows' gold rewrites; ``loss`` None leaves eval_loss out (a runtime
    that only decodes, e.g. ONNX Runtime or llama.cpp, has no teacher-forced loss here)."""
    per = []
    for pred, r in zip(preds, rows, strict=True):
        row = {"uid": r.get("uid"), "style": r.get("style"), "exact": pred == r["rewrite"], "rewrite": pred}
        if r.get("spec"):
            row["structural_f1"], row["parsed"] = structural_f1(pred, r["spec"])
        per.append(row)
    n = len(rows)
    out: dict[str, Any] = {"n": n, **({"eval_loss": round(loss, 4)} if loss is not None else {}),
                           "rougeL": round(rouge_l(preds, [r["rewrite"] for r in rows]), 4),
                           "exact_match": round(sum(p["exact"] for p in per) / n, 4)}
    with_spec = [p for p in per if "structural_f1" in p]
    if with_spec:
        out["structural_f1"] = round(sum(p["structural_f1"] for p in with_spec) / len(with_spec), 4)
        out["parse_rate"] = round(sum(p["parsed"] for p in with_spec) / len(with_spec), 4)
    return out, per
