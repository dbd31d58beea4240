"""The machine's limits: measured memory bandwidth, the bytes a decode step reads, and the decode roofline.

Decoding one token reads every weight once (the output matrix included; of the token embeddings only one row),
so one stream cannot decode faster than ``bandwidth / bytes of weights`` tokens per second. Batched decoding
reads the weights once for all the sequences in the batch, which is where parallel slots win.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def measure_bandwidth(n_threads: int = 0, mib: int = 512, repeats: int = 7) -> float:
    """Memory read bandwidth in GB/s: ``n_threads`` threads sum their slice of an array much larger than the
    caches (NumPy releases the GIL in reductions); the best of ``repeats`` runs."""
    n_threads = n_threads or os.cpu_count() or 1
    a = np.ones(mib * 2**20 // 4, dtype=np.float32)
    parts = np.array_split(a, n_threads)
    best = 0.0
    for _ in range(repeats):
        barrier = threading.Barrier(n_threads + 1)

        def work(x: np.ndarray, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            x.sum()

        threads = [threading.Thread(target=work, args=(p,)) for p in parts]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        best = max(best, a.nbytes / (time.perf_counter() - t0) / 1e9)
    del a, parts
    return best


def roofline(bandwidths: list[float], bytes_per_token: int, *, threads: int, mib: int) -> dict[str, Any]:
    """The run's decode roofline from its bandwidth measurements (GB/s, in the order taken): their median, with
    the range and every measurement."""
    bw = float(np.median(bandwidths))
    return {"bandwidth_gbs": round(bw, 2), "bandwidth_gbs_range": [round(min(bandwidths), 2), round(max(bandwidths), 2)],
            "bandwidth_gbs_measured": [round(b, 2) for b in bandwidths], "bytes_per_token": bytes_per_token,
            "tokens_per_s": round(bw * 1e9 / bytes_per_token, 2), "threads": threads,
            "method": f"numpy: {threads} threads sum a {mib} MiB array, best of 7; measured at the start and "
                      "before each method's runs; the roofline is their median"}


def gguf_tensors(path: str | Path, llama_cpp_dir: str | Path) -> dict[str, tuple[int, int]]:
    """(bytes, parameters) of each tensor in a GGUF, read with llama.cpp's own gguf-py (vendored beside the
    converter in third_party/llama.cpp)."""
    gguf_py = str(Path(llama_cpp_dir) / "gguf-py")
    if gguf_py not in sys.path:
        sys.path.insert(0, gguf_py)
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {t.name: (int(t.n_bytes), int(t.n_elements)) for t in reader.tensors}


def decode_bytes_per_token(tensors: dict[str, tuple[int, int]]) -> int:
    """Bytes one decode step reads: all weights, except that a separate input embedding is only gathered (one
    row), while tied embeddings are read whole as the output matrix."""
    total = sum(b for b, _ in tensors.values())
    if "output.weight" in tensors and "token_embd.weight" in tensors:
        total -= tensors["token_embd.weight"][0]
    return total


def machine_info() -> dict[str, Any]:
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory (Linux: VmHWM), or None where the system does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
