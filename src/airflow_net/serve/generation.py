"""Generating DAGs with llama.cpp in-process, through the continuous-batching engine (``serve.engine``).

``load_gguf`` opens a model with ``n_parallel`` slots; ``chat`` answers one conversation, ``chat_many`` a list of
them, ``n_parallel`` at a time. Greedy answers are reproducible: ``chat_many`` queues every request before the
first step, so the batches (and their numerics) depend only on the inputs and the params.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_net.serve.copy_ids import request_id_roles
from airflow_net.serve.engine import Completion, Engine, SamplingParams

log = logging.getLogger(__name__)


def load_gguf(path: str | Path, *, n_ctx: int = 2048, n_threads: int = 0, seed: int = 0, n_parallel: int = 1) -> Engine:
    """Open a GGUF; its own chat template (from the file's metadata) formats conversations.

    n_ctx is the context of each of the n_parallel slots (prompt + answer).
    """
    return Engine(path, n_parallel=n_parallel, n_ctx=n_ctx, n_threads=n_threads, seed=seed)


def _row(c: Completion) -> dict[str, Any]:
    return {
        "text": c.text,
        "finish_reason": c.finish_reason,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        # time the request spent in a slot (queueing excluded): the per-answer speed a user would see
        "seconds": round(c.seconds - c.queued_s, 4),
    }


def chat_many(
    engine: Engine,
    conversations: list[list[dict[str, str]]],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: Callable[[int], Any] | None = None,
    copy_ids: bool = False,
) -> list[dict[str, Any]]:
    """Chat completions for many conversations: text, token counts, finish reason and seconds, in input order.

    progress(n) is called as answers finish (e.g. a tqdm bar's update).
    """
    prompts = [engine.render_chat(m) for m in conversations]
    room = [max(1, min(max_tokens, engine.n_ctx - len(engine.tokenize(p)))) for p in prompts]
    # copy_ids: the answer's id strings come from the identifiers the request (the first user turn) names
    ids = [request_id_roles(_request_text(m)) if copy_ids else () for m in conversations]
    params = [SamplingParams(max_tokens=r, temperature=temperature, top_p=top_p, seed=seed, copy_ids=i)
              for r, i in zip(room, ids, strict=True)]
    return [_row(c) for c in engine.generate_many(prompts, params, progress=progress)]


def _request_text(messages: list[dict[str, str]]) -> str:
    """The request of a conversation: its first user turn (later ones may be follow-ups, e.g. repair findings)."""
    return next((m["content"] for m in messages if m["role"] == "user"), "")


def chat(
    engine: Engine,
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    copy_ids: bool = False,
) -> dict[str, Any]:
    """One chat completion: the text, token counts, finish reason and wall time."""
    return chat_many(engine, [messages], max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                     copy_ids=copy_ids)[0]


def exported_gguf(models_dir: str | Path, which: str, *, quantized: bool = True) -> Path:
    """The GGUF the export stage wrote for ``which`` (base | finetuned), as listed in its meta.json."""
    from airflow_net.utils import UserError, read_json

    meta_path = Path(models_dir) / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: not found (run `dvc repro export` first)")
    files = read_json(meta_path).get("files", {})
    key = f"{which}_{'quantized' if quantized else 'f16'}"
    if key not in files:
        raise UserError(f"{meta_path}: no entry '{key}' in files (found: {sorted(files)}); rerun export")
    return Path(models_dir) / files[key]
