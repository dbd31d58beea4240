"""CPU runtimes for the rewrite (T5) model behind one small interface (see ``base``).

A runtime name is ``<family>-<quant>``: ``RUNTIMES`` maps it to its class and ``QUANT`` to the quantization
the class is given. ``export(name, hf_folder, out_dir)`` writes the runtime's files; ``load(name, folder,
threads)`` loads them (the Hugging Face folder itself for the PyTorch runtimes).
"""

from __future__ import annotations

from typing import Any

from airflow_net.rewrite.runtimes.base import Generation, Runtime
from airflow_net.rewrite.runtimes.ct2_runtime import Ct2Runtime
from airflow_net.rewrite.runtimes.gguf_runtime import GgufRuntime
from airflow_net.rewrite.runtimes.onnx_runtime import OnnxRuntime
from airflow_net.rewrite.runtimes.torch_runtime import TorchRuntime

RUNTIMES: dict[str, type[Runtime]] = {
    "torch-fp32": TorchRuntime,
    "torch-int8": TorchRuntime,
    "onnx-fp32": OnnxRuntime,
    "onnx-int8": OnnxRuntime,
    "ct2-fp32": Ct2Runtime,
    "ct2-int8": Ct2Runtime,
    "gguf-f16": GgufRuntime,
    "gguf-q8_0": GgufRuntime,
    "gguf-q4_0": GgufRuntime,
}
# The quantization each runtime name gives its class (None: full precision).
QUANT: dict[str, str | None] = {
    "torch-fp32": None,
    "torch-int8": "int8",
    "onnx-fp32": None,
    "onnx-int8": "int8",
    "ct2-fp32": None,
    "ct2-int8": "int8",
    # llama.cpp's file types: f16 as converted; Q8_0 / Q4_0 quantized from an f32 conversion
    "gguf-f16": "F16",
    "gguf-q8_0": "Q8_0",
    "gguf-q4_0": "Q4_0",
}


def _check(name: str) -> type[Runtime]:
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}: expected one of {sorted(RUNTIMES)}")
    return RUNTIMES[name]


def export(name: str, hf_folder: str, out_dir: str) -> dict[str, Any]:
    """Write runtime ``name``'s files for the Hugging Face T5 folder into ``out_dir``; facts for meta.json."""
    return _check(name).export(hf_folder, out_dir, QUANT[name])


def load(name: str, folder: str, threads: int) -> Runtime:
    """Load runtime ``name`` from ``folder`` (its export, or the HF folder) at ``threads`` intra-op threads."""
    return _check(name).load(folder, threads, quant=QUANT[name])


__all__ = ["QUANT", "RUNTIMES", "Generation", "Runtime", "export", "load"]
