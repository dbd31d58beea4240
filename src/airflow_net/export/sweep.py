"""The quantization sweep's work for one type: quantize the fine-tuned F16 GGUF, answer the sweep's test requests
with it, score the answers, and measure its next-token distributions against F16 on the gold answers.

Everything the stage writes for a type comes from ``sweep_type``: the per-request rows (answers, scores, KL; the
same bytes for the same inputs) and the metrics (with the run facts: seconds, tokens/s). The choice of a type
across the sweep is :func:`airflow_net.export.quality.pick_smallest`, applied by the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from airflow_net.evaluate.metrics import extract_code, judge
from airflow_net.evaluate.stats import bootstrap_ci
from airflow_net.export.gguf import quantize_gguf
from airflow_net.export.quality import REFERENCE, answer_kl, summarise_kl
from airflow_net.params import GenerateParams
from airflow_net.serve.generation import chat_many, load_gguf
from airflow_net.utils import UserError

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    metrics: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


def quantized_model(reference: Path, quant: str, work_dir: Path) -> Path:
    """The GGUF for ``quant``: the reference itself for F16, else a fresh quantization of it into ``work_dir``."""
    if quant == REFERENCE:
        return reference
    return quantize_gguf(reference, work_dir / f"{reference.stem}-{quant}.gguf", quant)


def sweep_type(quant: str, reference: str | Path, requests: list[dict[str, Any]], *, work_dir: Path,
               gen: GenerateParams, seed: int, resamples: int, bootstrap_seed: int, max_kl: float,
               progress: Callable[[int], Any] | None = None) -> SweepResult:
    """One type of the sweep on ``requests`` (test rows: ``messages`` ending in the gold answer, ``spec``)."""
    reference = Path(reference)
    if not reference.is_file():
        raise UserError(f"{reference}: the fine-tuned F16 GGUF is missing (run `dvc repro export`)")
    if not requests:
        raise UserError("the sweep has no test requests with a spec (data/sft/test.jsonl)")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    model = quantized_model(reference, quant, work_dir)
    seconds["quantize"] = round(time.perf_counter() - t0, 2)

    engine = load_gguf(model, n_ctx=gen.n_ctx, n_threads=gen.n_threads, seed=seed, n_parallel=gen.parallel)
    try:
        convs = [[m for m in r["messages"] if m["role"] != "assistant"] for r in requests]
        t0, c0 = time.perf_counter(), time.process_time()
        outs = chat_many(engine, convs, max_tokens=gen.max_tokens, temperature=gen.temperature, top_p=gen.top_p,
                         seed=seed, progress=progress, copy_ids=gen.copy_ids)
        seconds["generate"] = round(time.perf_counter() - t0, 2)
        seconds["generate_cpu"] = round(time.process_time() - c0, 2)  # all of llama.cpp's threads
        t0 = time.perf_counter()
        ref_engine = load_gguf(reference, n_ctx=gen.n_ctx, n_threads=gen.n_threads, seed=seed)
        try:
            kls = [answer_kl(ref_engine, engine, r["messages"]) for r in requests]
        finally:
            ref_engine.close()
        seconds["kl"] = round(time.perf_counter() - t0, 2)
    finally:
        engine.close()

    rows = []
    for r, out, (kl, agree) in zip(requests, outs, kls, strict=True):
        j = judge(extract_code(out["text"]), r["spec"], airflow=r.get("airflow", 3))
        rows.append({"uid": r["uid"], "variant": r.get("variant"), "text": out["text"],
                     "finish_reason": out["finish_reason"], "completion_tokens": out["completion_tokens"],
                     "valid": j.valid, "structural_f1": round(j.structural_f1, 4), "kl_tokens": int(kl.size),
                     "kl_mean": round(float(kl.mean()), 6), "top1_agreement": round(float(agree.mean()), 4)})
    n_tok = sum(o["completion_tokens"] for o in outs)
    slot_s = sum(o["seconds"] for o in outs)
    size = model.stat().st_size
    metrics: dict[str, Any] = {
        "type": quant, "file": model.name, "reference": reference.name, "requests": len(rows),
        "size_mb": round(size / 1e6, 3),
        "size_vs_reference": round(size / reference.stat().st_size, 4),
        "completion_tokens": n_tok,
        # as metrics/generate.json: all slots together, and the speed one answer is decoded at in its slot
        "tokens_per_s": round(n_tok / max(1e-9, seconds["generate"]), 1),
        "request_tokens_per_s": round(n_tok / slot_s, 1) if slot_s else 0.0,
        # per CPU second of the process: steadier than wall time on a machine that others share
        "tokens_per_cpu_s": round(n_tok / max(1e-9, seconds["generate_cpu"]), 1),
        "parallel": gen.parallel,
    }
    for key in ("valid", "structural_f1"):
        vals = [float(r[key]) for r in rows]
        lo, hi = bootstrap_ci(vals, resamples, bootstrap_seed)
        name = "valid_rate" if key == "valid" else key
        metrics |= {name: round(float(np.mean(vals)), 4), f"{name}_lo": round(lo, 4), f"{name}_hi": round(hi, 4)}
    kl = summarise_kl([k for k, _ in kls], [a for _, a in kls])
    metrics |= kl.to_dict() | {"max_kl": max_kl, "kl_ok": kl.kl_mean <= max_kl, "seconds": seconds}
    if model != reference:
        model.unlink()  # the sweep keeps numbers, not models: export's quant.type is the one that ships
    log.info("%s: %.2f MB, valid %.3f [%.3f, %.3f], structural F1 %.3f, KL mean %.5f p99 %.5f, top-1 %.3f, "
             "%.0f tokens/s", quant, metrics["size_mb"], metrics["valid_rate"], metrics["valid_rate_lo"],
             metrics["valid_rate_hi"], metrics["structural_f1"], kl.kl_mean, kl.kl_p99, kl.top1_agreement,
             metrics["tokens_per_s"])
    return SweepResult(metrics=metrics, rows=rows)
