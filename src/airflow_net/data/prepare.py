"""Chat-format SFT splits, made by DAG so that no DAG's instructions leak across splits."""

from __future__ import annotations

import hashlib
import logging
import random
import zlib
from collections import defaultdict
from typing import Any

import numpy as np

from airflow_net.params import PrepareParams
from airflow_net.utils import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def assistant_answer(source: str) -> str:
    """The answer the model learns to give: the DAG file in one fenced block."""
    return f"```python\n{source.strip()}\n```"


def to_messages(system_prompt: str, instruction: str, source: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system_prompt}, {"role": "user", "content": instruction}]
    if source is not None:
        msgs.append({"role": "assistant", "content": assistant_answer(source)})
    return msgs


def split_of(uid: str, params: PrepareParams, seed: int) -> str:
    """The split of one DAG: "test", "val" or "train", from a seeded hash of its uid alone.

    It does not depend on which other DAGs exist, so the base stage (which pre-trains the tiny model on
    the corpus before any instruction is written) can leave out exactly the DAGs that prepare will hold
    out, even when the instruct stage dropped some DAGs: no test DAG's code is ever trained on.
    """
    digest = hashlib.sha256(f"{seed}:{uid}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < params.test_frac:
        return "test"
    if u < params.test_frac + params.val_frac:
        return "val"
    return "train"


def split_uids(uids: list[str], params: PrepareParams, seed: int) -> dict[str, list[str]]:
    """DAG uids by split (see :func:`split_of`); fails clearly when the train or test split would be empty."""
    parts: dict[str, list[str]] = {s: [] for s in ("test", "val", "train")}
    for uid in sorted(set(uids)):
        parts[split_of(uid, params, seed)].append(uid)
    if not parts["train"] or not parts["test"]:
        raise UserError(
            f"only {len(set(uids))} DAGs: too few for prepare.test_frac={params.test_frac} and "
            f"val_frac={params.val_frac} (train {len(parts['train'])}, test {len(parts['test'])} DAGs);"
            " generate more DAGs (corpus.n_dags) or change the fractions"
        )
    return parts


def split_by_dag(pairs: list[dict[str, Any]], params: PrepareParams, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Assign whole DAGs (all their instructions) to train/val/test by :func:`split_of`."""
    by_uid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in pairs:
        by_uid[p["uid"]].append(p)
    parts = split_uids(list(by_uid), params, seed)
    out: dict[str, list[dict[str, Any]]] = {}
    for split, ids in parts.items():
        rows = []
        for uid in sorted(ids):
            for p in by_uid[uid]:
                rows.append(
                    {
                        "messages": to_messages(params.system_prompt, p["instruction"], p["source"]),
                        "uid": uid,
                        "variant": p.get("variant"),
                        "spec": p.get("spec"),
                        "airflow": p.get("airflow", 3),
                    }
                )
        random.Random(f"{seed}:{split}").shuffle(rows)
        out[split] = rows
    return out


def repair_rows(train: list[dict[str, Any]], share: float, system_prompt: str, seed: int) -> list[dict[str, Any]]:
    """Repair conversations for a seeded ``share`` of the train split's DAGs (generate/repair_data.py): the
    request, the DAG with one planted defect (an assistant turn with weight 0: context, no loss), dagcheck's
    findings on it, and the original DAG as the answer. Each chosen DAG's first request (in split order) is used."""
    if share <= 0:
        return []
    from airflow_net.generate.repair_data import repair_conversations

    first: dict[str, dict[str, Any]] = {}
    for r in train:
        first.setdefault(r["uid"], r)
    out = []
    for uid, r in sorted(first.items()):
        if random.Random(f"{seed}:repair:{uid}").random() >= share:
            continue
        user = next(m["content"] for m in r["messages"] if m["role"] == "user")
        answer = r["messages"][-1]["content"]
        source = answer.removeprefix("```python\n").removesuffix("```").rstrip("\n") + "\n" \
            if answer.startswith("```python\n") else answer
        convs = repair_conversations(user, source, airflow=r.get("airflow", 3), system=system_prompt,
                                     seed=zlib.crc32(f"{seed}:{uid}".encode()))
        for c in convs:
            msgs = c["messages"]
            broken = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
            msgs[broken] = {**msgs[broken], "weight": 0}
            msgs[-1] = {"role": "assistant", "content": answer}  # the answer exactly as the plain rows have it
            out.append({"messages": msgs, "uid": uid, "variant": "repair", "spec": r.get("spec"),
                        "airflow": r.get("airflow", 3), "mutation": c["mutation"], "codes": c["codes"]})
    return out


def train_rows(pairs: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    """Rows for pairs that only ever train (e.g. distilled ones, which have no spec to evaluate against)."""
    return [
        {"messages": to_messages(system_prompt, p["instruction"], p["source"]), "uid": p["uid"],
         "variant": p.get("variant", "distill"), "spec": p.get("spec"), "airflow": p.get("airflow", 3)}
        for p in pairs
    ]


def fitting(rows: list[dict[str, Any]], lengths: Any, max_len: int) -> list[dict[str, Any]]:
    """The rows whose whole conversation (``lengths``: tokens of each, in order) fits ``max_len`` tokens."""
    if len(rows) != len(lengths):
        raise ValueError(f"fitting: {len(rows)} rows but {len(lengths)} lengths")
    return [r for r, n in zip(rows, lengths, strict=True) if int(n) <= max_len]


def token_lengths(tokenizer: Any, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of each full conversation and of its prompt (system + user + the assistant header)."""
    full, prompt = [], []
    for r in rows:
        msgs = r["messages"]
        full.append(len(tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False)))
        prompt.append(
            len(tokenizer.apply_chat_template(msgs[:-1], tokenize=True, add_generation_prompt=True, return_dict=False))
        )
    return np.asarray(full), np.asarray(prompt)


def length_stats(full: np.ndarray, prompt: np.ndarray, max_seq_len: int) -> dict[str, Any]:
    pct = {f"p{q}": int(np.percentile(full, q)) for q in (50, 90, 95, 99)}
    return {
        "examples": int(full.size),
        "tokens_mean": round(float(full.mean()), 1),
        **{f"tokens_{k}": v for k, v in pct.items()},
        "tokens_max": int(full.max()),
        "prompt_tokens_max": int(prompt.max()),
        "max_seq_len": max_seq_len,
        "truncated": int((full > max_seq_len).sum()),
        "truncation_rate": round(float((full > max_seq_len).mean()), 4),
    }


# The train stage's cost per packed row, in units of "one token through the model": a row of n tokens costs
# n + ATTENTION_COST * max_seq_len**2, because without a varlen (flash) kernel each packed row attends over its
# whole length under a block-diagonal mask (src/airflow_net/models/sft.py). Fitted to two runs of the tiny
# default on a 2-core machine: 2.62 s per step at max_seq_len 1024 (7,482 tokens per step, metrics/train.json)
# and 25 s per step at 4096 (issue 13); the attention share is 45% of a step at 1024 and 75% at 4096.
ATTENTION_COST = 7.27e-4
# A step this many times slower than the last train run gets a warning in the log.
SLOWER_WARNING = 2.0


def packed_rows(lengths: np.ndarray, max_seq_len: int) -> np.ndarray:
    """Tokens in each row when TRL packs the examples best-fit-decreasing into rows of ``max_seq_len``.

    Examples longer than a row are truncated to it, as the trainer does.
    """
    import bisect

    free: list[int] = []  # free space of the open rows, kept sorted
    for n in sorted((min(int(x), max_seq_len) for x in lengths), reverse=True):
        i = bisect.bisect_left(free, n)  # the fullest row that still fits it
        if i < len(free):
            room = free.pop(i) - n
        else:
            room = max_seq_len - n
        bisect.insort(free, room)
    return np.asarray([max_seq_len - f for f in free])


def train_cost(lengths: np.ndarray, max_seq_len: int, *, rows_per_step: int, packing: bool) -> dict[str, Any]:
    """Tokens per optimizer step and a machine-independent cost per step (see ATTENTION_COST)."""
    if packing:
        rows = packed_rows(lengths, max_seq_len)
        per_row = float(rows.mean())
        cost_row = per_row + ATTENTION_COST * max_seq_len**2
    else:  # one example per row, padded to the longest in its batch: approximate with the mean length
        clipped = np.minimum(lengths, max_seq_len)
        per_row = float(clipped.mean())
        cost_row = per_row + ATTENTION_COST * per_row**2
        rows = clipped
    return {
        "max_seq_len": max_seq_len,
        "rows": int(rows.size),
        "tokens_per_row": round(per_row, 1),
        "tokens_per_step": round(per_row * rows_per_step),
        "cost_per_step": round(cost_row * rows_per_step),
    }


def compare_to_last_run(cost: dict[str, Any], last_train: dict[str, Any] | None, max_steps: int) -> dict[str, Any]:
    """The expected seconds per step and for the whole train stage, scaled from the last train run's measured
    seconds by the ratio of costs per step; empty when there is no comparable run (its metrics lack the cost)."""
    if not last_train or not last_train.get("cost_per_step") or not last_train.get("steps"):
        return {}
    ratio = cost["cost_per_step"] / last_train["cost_per_step"]
    step_s = last_train["seconds"] / last_train["steps"] * ratio
    out = {
        "reference": {k: last_train.get(k) for k in ("max_seq_len", "steps", "seconds", "cost_per_step")},
        "relative_step_time": round(ratio, 2),
        "estimated_step_seconds": round(step_s, 2),
    }
    if max_steps > 0:
        out["estimated_train_seconds"] = round(step_s * max_steps)
    return out
