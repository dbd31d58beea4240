"""Quantization quality: how far a quantized model's next-token distributions are from the F16 model's, and
which quantization type to ship.

The divergence is llama.cpp's ``llama-perplexity --kl-divergence`` method: both models read the same text (teacher
forcing: the prompt and the gold answer), and at each answer position the quantized model's distribution Q is
compared with the F16 one P: KL(P || Q) = sum_v P(v) (log P(v) - log Q(v)), and whether both put their top token
on the same id ("same top p" in llama.cpp's output). Its summary is the mean KL, the 99th percentile of the
per-token KL (the rare tokens where quantization hurts most) and the top-1 agreement.

``pick_smallest`` is the shipping rule the report applies to the sweep's metrics: the smallest file whose valid
rate and structural F1 are both inside F16's 95% interval and whose mean KL is at most ``max_kl``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from airflow_net.utils import UserError

REFERENCE = "F16"  # the sweep's reference type: the export's unquantized GGUF, used as it is


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def token_kl(ref_logits: np.ndarray, q_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position (rows of two (positions, vocab) logit arrays): KL(softmax(ref) || softmax(q)) in nats, and
    whether the two argmaxes agree."""
    ref, q = np.atleast_2d(ref_logits), np.atleast_2d(q_logits)
    if ref.shape != q.shape:
        raise ValueError(f"logits must have the same shape (positions, vocab), got {ref.shape} and {q.shape}")
    lp, lq = _log_softmax(ref), _log_softmax(q)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    # Rounding can leave a tiny negative for identical rows; KL is never below zero.
    return np.maximum(kl, 0.0), ref.argmax(axis=-1) == q.argmax(axis=-1)


@dataclass
class KLSummary:
    tokens: int
    kl_mean: float
    kl_p99: float
    kl_max: float
    top1_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return {"kl_tokens": self.tokens, "kl_mean": round(self.kl_mean, 6), "kl_p99": round(self.kl_p99, 6),
                "kl_max": round(self.kl_max, 6), "top1_agreement": round(self.top1_agreement, 4)}


def summarise_kl(kls: Iterable[np.ndarray], agrees: Iterable[np.ndarray]) -> KLSummary:
    """Pool every answer position of every request (as llama.cpp pools its chunks)."""
    kl = np.concatenate([np.asarray(k, dtype=np.float64).ravel() for k in kls] or [np.zeros(0)])
    agree = np.concatenate([np.asarray(a, dtype=bool).ravel() for a in agrees] or [np.zeros(0, dtype=bool)])
    if kl.size == 0 or kl.size != agree.size:
        raise ValueError(f"need the same positive number of KL values and top-1 flags (got {kl.size}, {agree.size})")
    return KLSummary(tokens=int(kl.size), kl_mean=float(kl.mean()), kl_p99=float(np.quantile(kl, 0.99)),
                     kl_max=float(kl.max()), top1_agreement=float(agree.mean()))


def teacher_forced(engine: Any, messages: Sequence[Mapping[str, str]], max_tokens: int | None = None
                   ) -> tuple[list[int], int]:
    """The tokens of a chat whose last message is the gold answer, and the index of the first answer token.

    The prompt is rendered with the GGUF's own template (with the assistant turn opened, as for generation); the
    answer follows as the model would have produced it: its text, tokenized on its own, then the end-of-turn token.
    ``max_tokens`` cuts the whole sequence (a slot's context).
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("expected a conversation that ends with the gold assistant answer")
    prompt = engine.tokenize(engine.render_chat(list(messages[:-1])))
    answer = engine.tokenize(messages[-1]["content"], special=False, add_bos=False) + [engine.eos_token]
    tokens = prompt + answer
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    if len(tokens) <= len(prompt):
        raise UserError(f"no room for the gold answer: the prompt alone is {len(prompt)} tokens and the context "
                        f"{max_tokens}; raise generate.n_ctx")
    return tokens, len(prompt)


def answer_kl(ref_engine: Any, q_engine: Any, messages: Sequence[Mapping[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """KL and top-1 agreement of ``q_engine`` against ``ref_engine`` at each gold-answer position of one chat
    (the positions that predict an answer token: from the last prompt token to the answer's last but one)."""
    tokens, first = teacher_forced(ref_engine, messages, max_tokens=min(ref_engine.n_ctx, q_engine.n_ctx))
    ref = ref_engine.sequence_logits(tokens[:-1], first - 1)
    q = q_engine.sequence_logits(tokens[:-1], first - 1)
    return token_kl(ref, q)


def within(value: float, lo: float, hi: float) -> bool:
    return lo <= value <= hi


def pick_smallest(results: Mapping[str, Mapping[str, Any]], reference: str = REFERENCE) -> dict[str, Any]:
    """The smallest type whose quality is indistinguishable from the reference's on the sweep's requests.

    ``results``: type -> its sweep metrics (``size_mb``, ``valid_rate``, ``structural_f1``, the reference's
    ``*_lo``/``*_hi`` 95% interval, ``kl_mean`` and the ``max_kl`` it was held to). A type qualifies when its valid
    rate and structural F1 are both inside the reference's intervals and its mean KL is at most ``max_kl``. Returns
    the pick (None when the reference is missing) and, per type, whether it qualified and why not.
    """
    ref = results.get(reference)
    if ref is None:
        return {"pick": None, "reason": f"no {reference} result to compare with", "verdicts": {}}
    verdicts: dict[str, dict[str, Any]] = {}
    for name, m in results.items():
        failed = [key for key in ("valid_rate", "structural_f1")
                  if not within(m[key], ref[f"{key}_lo"], ref[f"{key}_hi"])]
        if m["kl_mean"] > m["max_kl"]:
            failed.append("kl_mean")
        verdicts[name] = {"ok": not failed, "outside": failed}
    ok = [n for n, v in verdicts.items() if v["ok"]]
    if not ok:  # the reference is always inside its own interval, unless its KL against itself is above max_kl
        return {"pick": None, "reason": "no type is within the reference's intervals", "verdicts": verdicts}
    pick = min(ok, key=lambda n: (results[n]["size_mb"], n))
    return {"pick": pick, "reason": f"the smallest file within {reference}'s 95% intervals and max_kl",
            "verdicts": verdicts}
