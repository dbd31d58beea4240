"""A client of ``airflow-net rewrite-serve``: one query (``rewrite_api``), or N concurrent clients over a list of
queries (``rewrite_bench_api``: per-request milliseconds and throughput)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class ApiError(RuntimeError):
    """The server answered with an error status (its message included), or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _endpoint(url: str) -> tuple[str, int, str]:
    """(host, port, path of /v1/rewrite) of a base URL such as ``http://127.0.0.1:8090``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r}: expected an http:// URL of a rewrite-serve server, e.g. http://127.0.0.1:8090")
    path = parts.path.rstrip("/")
    return parts.hostname, parts.port or 80, path if path.endswith("/v1/rewrite") else path + "/v1/rewrite"


class _Connection:
    """One keep-alive HTTP connection to the server (one per client thread)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.host, self.port, self.path = _endpoint(url)
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, query: str) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"query": query}).encode()
        for attempt in (0, 1):  # one retry on a keep-alive connection the server closed meanwhile
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                raw = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if attempt:
                    raise ApiError(f"http://{self.host}:{self.port}: {exc}") from None
                continue
            except (OSError, http.client.HTTPException) as exc:  # refused, timed out, unknown host
                self.close()
                raise ApiError(f"http://{self.host}:{self.port}: {exc} (is `airflow-net rewrite-serve` running "
                               "there?)") from None
            try:
                return r.status, json.loads(raw)
            except json.JSONDecodeError:
                return r.status, {"error": {"message": raw.decode(errors="replace")[:200]}}
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _check(status: int, out: dict[str, Any]) -> dict[str, Any]:
    if status != 200:
        msg = (out.get("error") or {}).get("message", out)
        raise ApiError(f"HTTP {status}: {msg}", status)
    return out


def rewrite_api(url: str, query: str, timeout: float = 60.0) -> dict[str, Any]:
    """POST one query; the server's JSON (``rewrite``, ``ms``, ``tokens``, ``runtime``) or ``ApiError``."""
    conn = _Connection(url, timeout)
    try:
        return _check(*conn.post(query))
    finally:
        conn.close()


@dataclass
class ApiBench:
    """One run of ``rewrite_bench_api``: per request (input order) the client's round-trip milliseconds, the
    server's milliseconds, the HTTP status and the answer (None on an error); wall seconds of the whole run."""

    concurrency: int
    client_ms: list[float]
    server_ms: list[float | None]
    statuses: list[int]
    texts: list[str | None]
    wall_s: float
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(s == 200 for s in self.statuses)

    @property
    def throughput_qps(self) -> float:
        """Answered queries per second of wall time."""
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        from airflow_net.rewrite.bench import latency_stats  # here: it loads the runtimes (torch)

        good = [i for i, s in enumerate(self.statuses) if s == 200]
        out: dict[str, Any] = {"concurrency": self.concurrency, "requests": len(self.statuses), "ok": self.ok,
                               "wall_s": round(self.wall_s, 3), "throughput_qps": round(self.throughput_qps, 3)}
        if good:
            out["client_ms"] = latency_stats([self.client_ms[i] for i in good])
            out["server_ms"] = latency_stats([float(self.server_ms[i] or 0.0) for i in good])
        return out


def rewrite_bench_api(url: str, queries: list[str], concurrency: int, timeout: float = 120.0) -> ApiBench:
    """Send every query once from ``concurrency`` client threads (each with its own keep-alive connection, each
    taking the next unsent query as soon as its previous one is answered); errors are recorded, not raised."""
    if concurrency < 1 or not queries:
        raise ValueError(f"expected concurrency >= 1 and at least one query (got {concurrency}, {len(queries)})")
    _endpoint(url)  # a bad URL fails here, once
    n = len(queries)
    client_ms = [0.0] * n
    server_ms: list[float | None] = [None] * n
    statuses = [0] * n
    texts: list[str | None] = [None] * n
    errors: list[str] = []
    lock = threading.Lock()
    nxt = iter(range(n))

    def client() -> None:
        conn = _Connection(url, timeout)
        try:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    status, out = conn.post(queries[i])
                except ApiError as exc:
                    status, out = 0, {"error": {"message": str(exc)}}
                client_ms[i] = (time.perf_counter() - t0) * 1000
                statuses[i] = status
                if status == 200:
                    texts[i], server_ms[i] = out["rewrite"], float(out["ms"])
                else:
                    with lock:
                        errors.append(f"query {i}: HTTP {status}: {(out.get('error') or {}).get('message')}")
        finally:
            conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    return ApiBench(concurrency, client_ms, server_ms, statuses, texts, time.perf_counter() - t0, errors)
