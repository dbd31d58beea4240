"""Prices: what a request cost (from the API's usage fields), what a submission may cost at most (for the
budget guard) and what the same instructions would have cost one live request per instruction."""

from __future__ import annotations

from typing import Any

from airflow_net.params import AnthropicParams

# Prompt caching multipliers on the input price (Anthropic's published ratios): the project does not ask for
# caching, but if usage reports cached tokens they are priced as billed.
CACHE_WRITE = 1.25
CACHE_READ = 0.1


def usage_tokens(usage: Any) -> dict[str, int]:
    """The token counts of an API ``Usage`` object (or dict), missing fields as 0."""
    get = usage.get if isinstance(usage, dict) else (lambda k, d=None: getattr(usage, k, d))
    return {
        k: int(get(k, 0) or 0)
        for k in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    }


def usd(tokens: dict[str, int], params: AnthropicParams, batch: bool) -> float:
    """Price of one answered request from its token counts."""
    inp = (
        tokens.get("input_tokens", 0)
        + CACHE_WRITE * tokens.get("cache_creation_input_tokens", 0)
        + CACHE_READ * tokens.get("cache_read_input_tokens", 0)
    )
    live = (inp * params.price_input_per_mtok + tokens.get("output_tokens", 0) * params.price_output_per_mtok) / 1e6
    return live * (params.batch_discount if batch else 1.0)


def worst_case_usd(input_tokens_estimate: int, params: AnthropicParams, batch: bool) -> float:
    """What one request may cost at most: the generous input estimate and an answer of ``max_tokens``."""
    return usd({"input_tokens": input_tokens_estimate, "output_tokens": params.max_tokens}, params, batch)


def live_one_per_instruction_usd(tokens: dict[str, int], n: int, params: AnthropicParams) -> float:
    """The same instructions at one live request each: the prompt (dominated by the DAG) is sent ``n`` times
    at the live price, and the instructions themselves are written once in total."""
    return usd({"input_tokens": n * tokens.get("input_tokens", 0), "output_tokens": tokens.get("output_tokens", 0)}, params, False)
