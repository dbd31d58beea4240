"""The interface every rewrite runtime implements.

A runtime name (``torch-int8``, ``onnx-fp32``, ``ct2-int8``, ``gguf-q8_0``, ...) is one class and one
quantization. The contract, used by the rewrite_export and rewrite_bench stages, the chat CLI and the API:

- ``export(hf_folder, out_dir, quant)`` writes everything ``load`` needs into ``out_dir`` (the runtime's
  files *and* the tokenizer files), and returns a small dict of facts for ``meta.json`` (file sizes in bytes,
  tool versions). Runtimes that load the Hugging Face folder itself (PyTorch) write nothing and return ``{}``:
  their ``load`` is then given the Hugging Face folder.
- ``load(folder, threads, quant)`` loads an exported folder (or the Hugging Face folder for PyTorch) with
  ``threads`` intra-op threads; it raises ``ValueError`` (one line: what was expected) when the folder is not
  what it needs, and ``ImportError`` when the runtime's package is not installed.
- ``generate(queries, max_new_tokens)`` greedy-decodes one query at a time and times each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

# What a runtime may raise when its package is missing or the model does not fit it: callers that try several
# runtimes (rewrite_export, rewrite_bench) record it and go on.
RUNTIME_ERRORS = (ValueError, ImportError, RuntimeError, OSError, NotImplementedError)


def why(e: BaseException) -> str:
    """An exception as the one line recorded for a skipped runtime."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


@dataclass(frozen=True)
class Generation:
    """Greedy outputs, each query's wall milliseconds and generated-token count (input order)."""

    texts: list[str]
    ms: list[float]
    tokens: list[int]


class Runtime(ABC):
    """A loaded T5 model that decodes greedily one query at a time."""

    name: str
    # True when load() takes the Hugging Face folder itself (nothing to export)
    loads_hf_folder: bool = False
    # Raised when export() writes a different layout: exports kept from an older one (meta.json's
    # format_version, written by rewrite.export.export_all) are then made again instead of failing to load
    format_version: int = 1

    @classmethod
    def export(cls, hf_folder: str, out_dir: str, quant: str | None = None) -> dict[str, Any]:
        """Write what ``load`` needs into ``out_dir``; return facts for meta.json. Default: nothing to export."""
        return {}

    @classmethod
    @abstractmethod
    def load(cls, folder: str, threads: int, quant: str | None = None) -> Runtime:
        """Load an exported folder (the Hugging Face folder when ``loads_hf_folder``); ValueError if unusable."""

    @abstractmethod
    def generate(self, queries: list[str], max_new_tokens: int, ignore_eos: bool = False) -> Generation:
        """Greedy-decode each query; ``ignore_eos`` forces exactly ``max_new_tokens`` (benchmarks)."""
