"""Each inference method, run on the same workload with ``workers`` requests in flight at a time.

| method | what runs | parallelism |
|---|---|---|
| transformers-fp32 / -bf16 | transformers ``generate`` in a worker process | static batches of ``workers`` prompts |
| llama-cpp | llama-cpp-python ``Llama``, one sequence, in a worker process | none (run at 1 worker only) |
| processes | ``workers`` such processes, each with its own model and cores/workers threads | one model per process |
| llama-cpp-server | ``python -m llama_cpp.server`` (the stock server), ``workers`` streaming clients | none: one lock |
| python-engine | ``airflow-net serve --engine python --parallel workers``, ``workers`` streaming clients | continuous batching |
| llama-server | llama.cpp's server ``-np workers``, ``workers`` streaming clients | continuous batching |

Every method gets a warm-up request before the clock starts (it maps the weights in; its prompt is not one of the
requests, so no request finds its own prompt already cached), the same requests, each a distinct prompt, the same
fixed output length with end-of-generation ignored, greedy sampling and the same number of threads in total.
Each run returns per-request records (wall-clock start, first token, end, token counts) and the peak resident
memory of the processes that hold the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_net.bench.hardware import peak_rss_mb
from airflow_net.bench.workload import Workload

log = logging.getLogger(__name__)

METHODS = ("transformers-fp32", "transformers-bf16", "llama-cpp", "processes", "llama-cpp-server", "python-engine",
           "llama-server")
SINGLE_SEQUENCE = ("llama-cpp",)


@dataclass
class Run:
    method: str
    workers: int
    records: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_mb: float | None = None
    skipped: str | None = None  # why the run did not happen
    notes: list[str] = field(default_factory=list)
    other_cpu_share: float | None = None  # CPU used by other processes during the run, share of all cores


@dataclass
class Setup:
    gguf: Path
    hf_dir: Path | None  # the same model in transformers' format (the baseline)
    workload: Workload
    workload_path: Path
    threads: int
    llama_server: Path | None
    timeout_s: float = 900.0
    env: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _py_env(setup: Setup) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2])
    return {**os.environ, **setup.env, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


# ---------------------------------------------------------------- in-process methods (worker processes)
def _start_worker(setup: Setup, method: str, model: Path, reqs: list[int], threads: int, batch: int,
                  wait_go: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "airflow_net.bench.worker", method, str(setup.workload_path), "--model", str(model),
           "--requests", ",".join(map(str, reqs)), "--threads", str(threads), "--batch", str(batch)]
    if wait_go:
        cmd.append("--wait-go")
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_py_env(setup))


def _collect(proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"benchmark worker timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_worker_method(setup: Setup, method: str, workers: int) -> Run:
    run = Run(method, workers)
    reqs = setup.workload.requests()
    if method.startswith("transformers"):
        if setup.hf_dir is None:
            run.skipped = "no transformers-format copy of the model"
            return run
        proc = _start_worker(setup, method, setup.hf_dir, reqs, setup.threads, workers, wait_go=False)
        res = _collect(proc, setup.timeout_s)
        run.records, run.peak_rss_mb = res["records"], res["peak_rss_mb"]
        return run
    if method == "llama-cpp":
        proc = _start_worker(setup, method, setup.gguf, reqs, setup.threads, 1, wait_go=False)
        res = _collect(proc, setup.timeout_s)
        run.records, run.peak_rss_mb = res["records"], res["peak_rss_mb"]
        return run
    assert method == "processes"
    # The approach from before parallel slots: one model per process, the cores shared out between them
    # (more threads than cores would make llama.cpp's spinning threads fight).
    threads = max(1, setup.threads // workers)
    if setup.threads % workers and workers < setup.threads:
        run.notes.append(f"{setup.threads} threads do not split evenly over {workers} processes")
    if workers > setup.threads:
        run.notes.append(f"{workers} processes on {setup.threads} threads: oversubscribed")
    shares = [reqs[k::workers] for k in range(workers)]
    procs = [_start_worker(setup, "llama-cpp", setup.gguf, share, threads, 1, wait_go=True) for share in shares]
    try:
        for p in procs:  # every process has loaded its model and warmed up
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a benchmark worker did not start: {p.stderr.read()[-2000:]}")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [_collect(p, setup.timeout_s) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    run.records = [r for res in results for r in res["records"]]
    run.peak_rss_mb = round(sum(res["peak_rss_mb"] for res in results), 1)
    return run


# ---------------------------------------------------------------- servers and the HTTP client
async def _one_http(session: Any, url: str, body: dict[str, Any], prompt: int, n_prompt: int) -> dict[str, Any]:
    t0 = time.time()
    first = None
    usage = None
    finish = None
    chunks = 0
    async with session.post(url, json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:500]}")
        async for line in r.content:
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            ev = json.loads(payload)
            if "error" in ev:
                raise RuntimeError(f"server error: {ev['error']}")
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices") or []:
                if ch.get("text") or ch.get("finish_reason"):
                    if first is None:
                        first = time.time()
                    chunks += bool(ch.get("text"))
                    finish = ch.get("finish_reason") or finish
    t1 = time.time()
    n = usage["completion_tokens"] if usage else (body["max_tokens"] if finish == "length" else chunks)
    return {"prompt": prompt, "prompt_tokens": usage["prompt_tokens"] if usage else n_prompt,
            "completion_tokens": n, "t_start": t0, "t_first": first, "t_end": t1, "finish_reason": finish}


async def _drive(base: str, w: Workload, reqs: list[int], workers: int, extra: dict[str, Any]) -> list[dict[str, Any]]:
    import aiohttp

    url = base + "/v1/completions"
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in reqs:
        queue.put_nowait(i)
    records: list[dict[str, Any]] = []

    def body(prompt: str, n: int) -> dict[str, Any]:
        return {"prompt": prompt, "max_tokens": n, "temperature": 0.0, "stream": True,
                "stream_options": {"include_usage": True}, **extra}

    # a new connection per request: llama-server closes a kept-alive connection after a stream, and a POST
    # on a connection the server has closed fails instead of being retried
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                     connector=aiohttp.TCPConnector(force_close=True)) as s:
        await _one_http(s, url, body(w.warmup, 4), -1, 0)  # warm-up, on a prompt outside the requests

        async def client() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                records.append(await _one_http(s, url, body(w.prompts[i], w.max_tokens), i, w.prompt_tokens[i]))

        await asyncio.gather(*(client() for _ in range(workers)))
    return records


def _wait_ready(proc: subprocess.Popen, base: str, log_path: Path, timeout: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError, ConnectionError):
            pass
        if time.time() > deadline:
            raise RuntimeError(f"the server did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def server_command(setup: Setup, method: str, workers: int, port: int) -> tuple[list[str], dict[str, Any]]:
    """The server's command line and the request fields that make it generate exactly max_tokens."""
    w = setup.workload
    t = str(setup.threads)
    if method == "python-engine":
        return ([sys.executable, "-m", "airflow_net.cli", "serve", "--engine", "python", "--model", str(setup.gguf),
                 "--parallel", str(workers), "--ctx-size", str(w.n_ctx), "--threads", t, "--port", str(port)],
                {"ignore_eos": True})
    if method == "llama-server":
        from airflow_net.serve.llama_server import llama_server_args

        assert setup.llama_server is not None
        return llama_server_args(setup.llama_server, setup.gguf, n_parallel=workers, n_ctx=w.n_ctx,
                                 n_threads=setup.threads, port=port), {"ignore_eos": True}
    assert method == "llama-cpp-server"
    # One model behind a lock; interrupt_requests off, or a new request cuts off the stream in progress.
    # No ignore_eos there: a logit bias on the end-of-generation tokens does the same.
    return ([sys.executable, "-m", "llama_cpp.server", "--model", str(setup.gguf), "--n_ctx", str(w.n_ctx),
             "--n_threads", t, "--n_threads_batch", t, "--n_batch", "512", "--flash_attn", "True",
             "--interrupt_requests", "False", "--verbose", "False", "--host", "127.0.0.1", "--port", str(port)],
            {"logit_bias": {str(e): -100 for e in w.eog_tokens}})


def run_server_method(setup: Setup, method: str, workers: int) -> Run:
    run = Run(method, workers)
    if method == "llama-server" and setup.llama_server is None:
        run.skipped = "llama-server not found (run `make llama-server`)"
        return run
    port = free_port()
    cmd, extra = server_command(setup, method, workers, port)
    if method == "llama-cpp-server" and workers > 1:
        run.notes.append("serializes requests: one at a time behind a lock")
    # the server's log goes to a file: a pipe nobody reads would fill up and stall it
    log_path = setup.workload_path.parent / f"{method}-x{workers}.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, text=True, env=_py_env(setup))
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, log_path, timeout=300)
        reqs = setup.workload.requests()
        try:
            run.records = asyncio.run(asyncio.wait_for(_drive(base, setup.workload, reqs, workers, extra),
                                                       timeout=setup.timeout_s))
        except Exception as exc:  # noqa: BLE001  (client errors of any kind: report them with the server's log)
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{type(exc).__name__}: {exc}\n--- {method} log (last lines) ---\n{tail}") from exc
        run.peak_rss_mb = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return run


def run_method(setup: Setup, method: str, workers: int) -> Run:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if method in SINGLE_SEQUENCE and workers != 1:
        return Run(method, workers, skipped="one sequence by design (runs at 1 worker)")
    t0 = time.time()
    before = _cpu_snapshot()
    if method in ("python-engine", "llama-server", "llama-cpp-server"):
        run = run_server_method(setup, method, workers)
    else:
        run = run_worker_method(setup, method, workers)
    run.other_cpu_share = _other_cpu_share(before, _cpu_snapshot())
    log.info("%s x%d: %s in %.0f s (other processes used %.0f%% of the CPU)", method, workers,
             run.skipped or f"{len(run.records)} requests", time.time() - t0, 100 * (run.other_cpu_share or 0))
    return run


def _cpu_snapshot() -> tuple[float, float, float]:
    """(wall time, CPU seconds busy on the whole machine, CPU seconds of this process and its waited children)."""
    import psutil

    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0) - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0)
    own = psutil.Process().cpu_times()
    return time.time(), busy, own.user + own.system + own.children_user + own.children_system


def _other_cpu_share(a: tuple[float, float, float], b: tuple[float, float, float]) -> float | None:
    """The share of all cores that processes outside this benchmark used between two snapshots: a benchmark on a
    shared machine is only as good as this number is small. (A server is a child: its CPU counts as ours once
    it has been waited for, which run_server_method does before returning.)"""
    wall = b[0] - a[0]
    if wall <= 0:
        return None
    other = (b[1] - a[1]) - (b[2] - a[2])
    return round(max(0.0, other) / (wall * (os.cpu_count() or 1)), 3)
