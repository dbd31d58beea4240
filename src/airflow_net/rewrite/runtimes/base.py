"""The interface every rewrite runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
    """Greedy outputs, each query's wall milliseconds and generated-token count (input order)."""

    texts: list[str]
    ms: list[float]
    tokens: list[int]


class Runtime(ABC):
    """A loaded T5 model that decodes greedily one query at a time."""

    name: str

    @classmethod
    @abstractmethod
    def load(cls, folder: str, threads: int, quant: str | None = None) -> Runtime:
        """Load a Hugging Face T5 folder; raise ValueError with one line if it cannot."""

    @abstractmethod
    def generate(self, queries: list[str], max_new_tokens: int, ignore_eos: bool = False) -> Generation:
        """Greedy-decode each query; ``ignore_eos`` forces exactly ``max_new_tokens`` (benchmarks)."""
