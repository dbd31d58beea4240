"""A backend over any OpenAI-compatible chat endpoint (vLLM, llama-server, `airflow-net serve`).

Requests go out with bounded concurrency; 429, 5xx, connection errors and timeouts are retried with
exponential backoff. Answers come back one per conversation, in input order: nothing lost, nothing duplicated
(a request that still fails after the last attempt raises). The API key is read from an environment variable
whose *name* the caller passes; the key itself is never logged or written.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from airflow_net.utils import UserError

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}


class EndpointError(UserError):
    pass


def endpoint_backend(url: str, *, model: str = "default", max_tokens: int = 768, top_p: float = 1.0,
                     api_key_env: str | None = None, concurrency: int = 4, attempts: int = 5,
                     timeout_s: float = 120.0, backoff_s: float = 0.5, copy_ids: bool = False) -> Any:
    """``complete(conversations, temperature=, seed=)`` over ``{url}/chat/completions`` (url ends in /v1).
    ``copy_ids`` asks the server for the decoding rules of ``generate.copy_ids`` (``"copy_ids": true`` in the
    body: ``airflow-net serve`` applies them; other servers ignore the unknown field and decode freely)."""
    if concurrency < 1 or attempts < 1:
        raise ValueError("concurrency and attempts must be >= 1")
    headers = {"Content-Type": "application/json"}
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise UserError(f"environment variable {api_key_env} (the endpoint's API key) is not set")
        headers["Authorization"] = f"Bearer {key}"
    target = url.rstrip("/") + "/chat/completions"

    def one(messages: list[dict[str, str]], temperature: float, seed: int) -> dict[str, Any]:
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p, "seed": seed}
        if copy_ids:
            body["copy_ids"] = True
        last = ""
        for attempt in range(attempts):
            t0 = time.perf_counter()
            try:
                r = requests.post(target, json=body, headers=headers, timeout=timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}"
            else:
                if r.status_code == 200:
                    data = r.json()
                    choice = data["choices"][0]
                    usage = data.get("usage") or {}
                    return {"text": choice["message"]["content"] or "", "finish_reason": choice.get("finish_reason"),
                            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
                            "completion_tokens": int(usage.get("completion_tokens", 0)),
                            "seconds": round(time.perf_counter() - t0, 4), "attempts": attempt + 1}
                if r.status_code not in RETRY_STATUS:
                    raise EndpointError(f"{target}: HTTP {r.status_code}: {r.text[:200]}")
                last = f"HTTP {r.status_code}"
            # exponential backoff: a busy server gets room to drain its queue
            wait = backoff_s * 2 ** attempt
            log.warning("%s: %s (attempt %d of %d); retrying in %.1f s", target, last, attempt + 1, attempts, wait)
            time.sleep(wait)
        raise EndpointError(f"{target}: still failing after {attempts} attempts ({last})")

    def complete(conversations: list[list[dict[str, str]]], *, temperature: float | list[float] = 0.0,
                 seed: int | list[int] = 0) -> list[dict[str, Any]]:
        seeds = seed if isinstance(seed, list) else [seed] * len(conversations)
        temps = temperature if isinstance(temperature, list) else [temperature] * len(conversations)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            # map keeps input order; each conversation is one task: no answer lost or duplicated
            return list(pool.map(lambda c: one(c[0], c[2], c[1]), zip(conversations, seeds, temps, strict=True)))

    return complete
