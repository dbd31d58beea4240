"""CPU runtimes for the rewrite (T5) model behind one small interface.

``load(name, folder, threads)`` returns a :class:`Runtime`; ``generate(queries,
max_new_tokens)`` returns the texts and each query's milliseconds. Only the
PyTorch runtimes exist so far (fp32 and dynamic int8); ONNX Runtime,
CTranslate2 and GGUF are issue 15 part B work still to do.
"""

from __future__ import annotations

from airflow_net.rewrite.runtimes.base import Generation, Runtime
from airflow_net.rewrite.runtimes.torch_runtime import TorchRuntime

RUNTIMES: dict[str, type[Runtime]] = {
    "torch-fp32": TorchRuntime,
    "torch-int8": TorchRuntime,
}


def load(name: str, folder: str, threads: int) -> Runtime:
    """Load the T5 folder with runtime ``name`` at ``threads`` intra-op threads."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}: expected one of {sorted(RUNTIMES)}")
    return RUNTIMES[name].load(folder, threads, quant="int8" if name.endswith("int8") else None)


__all__ = ["RUNTIMES", "Generation", "Runtime", "load"]
