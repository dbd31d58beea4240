"""Chat-format SFT splits, made by DAG so that no DAG's instructions leak across splits."""

from __future__ import annotations

import hashlib
import logging
import random
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


def train_rows(pairs: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    """Rows for pairs that only ever train (e.g. distilled ones, which have no spec to evaluate against)."""
    return [
        {"messages": to_messages(system_prompt, p["instruction"], p["source"]), "uid": p["uid"],
         "variant": p.get("variant", "distill"), "spec": p.get("spec"), "airflow": p.get("airflow", 3)}
        for p in pairs
    ]


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
