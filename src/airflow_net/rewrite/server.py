"""The rewrite (T5) model over HTTP: ``POST /v1/rewrite``, ``/health`` and ``/metrics`` (Starlette + uvicorn).

One worker thread owns the loaded runtime and drains a bounded queue in arrival order (``Batcher``): the event
loop never runs the model, and two requests never contend for it (PyTorch's intra-op threads are shared by the
whole process, so two decodes at once would each run at half speed and both finish late).

Behaviour a client can rely on:
- ``{"query": "..."}`` -> ``{"rewrite", "ms", "tokens", "runtime"}``; ``ms`` is the server's time for this request,
  from taking it off the socket to its answer: the wait in the queue plus its own decode;
- bad input (not JSON, not an object, no/empty/non-string ``query``, a query over ``max_query_chars``) gets HTTP
  400 with ``{"error": {"message", ...}}`` saying what was expected;
- more than ``max_queue`` requests waiting: 503 with a message and ``Retry-After``;
- SIGTERM or SIGINT: stop accepting, let running requests finish for ``grace_s``, answer the rest 503, exit 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_net.rewrite.runtimes import Runtime
from airflow_net.serve.server import _error, _Server

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` requests already."""


class Closed(Exception):
    """The batcher is stopping: no new requests."""


@dataclass(frozen=True)
class Answer:
    """One query's reformulation, its decode milliseconds, its generated tokens and the size of its batch."""

    text: str
    decode_ms: float
    tokens: int
    batch: int


@dataclass
class _Item:
    query: str
    future: Future[Answer]


class Batcher:
    """A bounded queue of queries drained in arrival order by one worker thread that owns the runtime.

    The worker takes the oldest query, then whatever else arrives within ``window_s`` up to ``max_batch`` in all,
    and decodes the batch. A runtime whose class sets ``decodes_batches = True`` gets the whole batch in one
    ``generate`` call (one batched forward pass per step) and its answers come back together. The runtimes built
    so far decode one query at a time (``base.Runtime``'s contract), so for them each query of the batch is decoded
    alone and answered as soon as it is done: a batch then costs no one latency, it only bounds how many
    queries one wake-up of the worker serves. ``queued`` counts the queries not yet taken by the worker.
    """

    def __init__(self, runtime: Runtime, *, max_new_tokens: int, max_batch: int = 8, max_queue: int = 64,
                 window_s: float = 0.002, postprocess: Callable[[str, str], str] | None = None, beams: int = 1,
                 snap: bool = True) -> None:
        if max_batch < 1 or max_queue < 1 or max_new_tokens < 1 or window_s < 0:
            raise ValueError(f"expected max_batch, max_queue, max_new_tokens >= 1 and window_s >= 0 "
                             f"(got {max_batch}, {max_queue}, {max_new_tokens}, {window_s})")
        if beams < 1:
            raise ValueError(f"expected beams >= 1 (got {beams})")
        self.runtime = runtime
        # (rewrite, query) -> rewrite after decoding: rewrite.snap's mending and id copying (rewrite/snap.py)
        self.postprocess = postprocess
        # beams > 1 (runtimes with nbest(); the others decode greedily): a beam search, and the first beam that
        # parses as a canonical request wins, mended and with the query's ids copied when ``snap``
        # (rewrite/snap.py's pick, as the pipeline's Reformulator does: rewrite.beams)
        self.beams = beams if hasattr(runtime, "nbest") else 1
        self.snap = snap
        self.max_new_tokens = max_new_tokens
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.window_s = window_s
        self.on_batch = None  # called with each batch's size (the server's metrics)
        self._items: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def queued(self) -> int:
        return len(self._items)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rewrite-batcher", daemon=True)
            self._thread.start()

    def submit(self, query: str) -> Future[Answer]:
        """Queue one query; its answer comes on the future. Raises ``QueueFull`` or ``Closed``."""
        with self._cond:
            if self._closed:
                raise Closed("the server is shutting down")
            if len(self._items) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting); retry later")
            item = _Item(query, Future())
            self._items.append(item)
            self._cond.notify()
        return item.future

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new queries, cancel the queued ones (their callers get ``CancelledError``), end the worker after
        the batch it is decoding."""
        with self._cond:
            self._closed = True
            left, self._items = list(self._items), collections.deque()
            self._cond.notify_all()
        for item in left:
            item.future.cancel()
        if self._thread is not None:
            self._thread.join(timeout)

    def _take(self) -> list[_Item] | None:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            batch = [self._items.popleft()]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                if not self._items:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._cond.wait(left) or self._closed:
                        break
                    if not self._items:
                        continue
                batch.append(self._items.popleft())
        # A caller that gave up while queued (cancelled future) is not decoded.
        return [it for it in batch if it.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        batched = bool(getattr(self.runtime, "decodes_batches", False))
        while (batch := self._take()) is not None:
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            if self.beams > 1:
                for it in batch:
                    self._beam_search(it, len(batch))
                continue
            groups = [batch] if batched else [[it] for it in batch]
            for group in groups:
                try:
                    gen = self.runtime.generate([it.query for it in group], self.max_new_tokens)
                except Exception as exc:  # noqa: BLE001 -- the worker must outlive one bad decode
                    log.exception("decode failed for %d queries", len(group))
                    for it in group:
                        it.future.set_exception(exc)
                    continue
                for i, it in enumerate(group):
                    text = self.postprocess(gen.texts[i], it.query) if self.postprocess else gen.texts[i]
                    it.future.set_result(Answer(text, gen.ms[i], gen.tokens[i], len(batch)))


    def _beam_search(self, it: _Item, batch: int) -> None:
        from airflow_net.rewrite.snap import pick_index

        try:
            texts, ms, tokens = self.runtime.nbest(it.query, self.beams, self.max_new_tokens)
            i, text = pick_index(texts, it.query, mend=self.snap)
        except Exception as exc:  # noqa: BLE001 -- the worker must outlive one bad decode
            log.exception("beam search failed")
            it.future.set_exception(exc)
            return
        it.future.set_result(Answer(text, ms, tokens[i], batch))


class _Metrics:
    """Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

    def __init__(self, batcher: Batcher) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        p = "airflow_net_rewrite_"
        self.requests = Counter(p + "requests", "POST /v1/rewrite answers by HTTP status", ["status"], registry=r)
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.latency = Histogram(p + "request_duration_seconds", "Server time of answered rewrites (queue + decode)",
                                 buckets=buckets, registry=r)
        self.decode = Histogram(p + "decode_seconds", "Decode time of one query", buckets=buckets, registry=r)
        self.tokens = Counter(p + "generated_tokens", "Generated tokens", registry=r)
        self.batch = Histogram(p + "batch_size", "Queries the worker took at once", buckets=(1, 2, 4, 8, 16, 32, 64),
                               registry=r)
        Gauge(p + "queue_depth", "Queries waiting for the worker", registry=r).set_function(lambda: batcher.queued)
        Gauge(p + "max_queue", "Queue bound (503 past it)", registry=r).set(batcher.max_queue)
        batcher.on_batch = self.batch.observe


def _query(raw: bytes, max_query_chars: int) -> str:
    """The request's query, or ValueError saying what was expected."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f'the request body is not valid JSON ({exc}); expected {{"query": "..."}}') from None
    if not isinstance(data, dict):
        raise ValueError(f'the request body must be a JSON object {{"query": "..."}}, got {type(data).__name__}')
    if "query" not in data:
        raise ValueError('missing field "query": expected {"query": "..."}')
    q = data["query"]
    if not isinstance(q, str):
        raise ValueError(f'"query" must be a string, got {type(q).__name__}')
    q = q.strip()
    if not q:
        raise ValueError('"query" is empty: expected some text to reformulate')
    if len(q) > max_query_chars:
        raise ValueError(f'"query" has {len(q)} characters; at most {max_query_chars} are accepted')
    return q


def create_app(batcher: Batcher, *, runtime_name: str, max_query_chars: int = 2000) -> Starlette:
    """The ASGI app; its lifespan starts the batcher's worker and stops it at shutdown."""
    metrics = _Metrics(batcher)

    def fail(status: int, message: str) -> Response:
        metrics.requests.labels(str(status)).inc()
        return _error(status, message, headers={"Retry-After": "1"} if status == 503 else None)

    async def rewrite(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            query = _query(await request.body(), max_query_chars)
        except ValueError as exc:
            return fail(400, str(exc))
        try:
            fut = batcher.submit(query)
        except (QueueFull, Closed) as exc:
            return fail(503, str(exc))
        try:
            ans = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            if not fut.cancelled():  # this handler was cancelled, not the queued query: pass it on
                raise
            return fail(503, "the server is shutting down; the request was not decoded")
        except Exception as exc:  # noqa: BLE001 -- the runtime failed on this query
            return fail(500, f"the runtime failed: {exc}")
        seconds = time.perf_counter() - t0
        metrics.requests.labels("200").inc()
        metrics.latency.observe(seconds)
        metrics.decode.observe(ans.decode_ms / 1000)
        metrics.tokens.inc(ans.tokens)
        return JSONResponse({"rewrite": ans.text, "ms": round(seconds * 1000, 2), "tokens": ans.tokens,
                             "runtime": runtime_name, "decode_ms": round(ans.decode_ms, 2), "batch": ans.batch})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "runtime": runtime_name, "queued": batcher.queued,
                             "max_queue": batcher.max_queue, "max_batch": batcher.max_batch})

    async def prom(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no route {request.method} {request.url.path}; see POST /v1/rewrite, /health, /metrics")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher.start()
        yield
        # uvicorn has let running requests finish (grace period); the rest are cancelled (503).
        await asyncio.get_running_loop().run_in_executor(None, batcher.stop)

    app = Starlette(
        routes=[Route("/v1/rewrite", rewrite, methods=["POST"]), Route("/health", health, methods=["GET"]),
                Route("/metrics", prom, methods=["GET"])],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.batcher = batcher
    app.state.metrics = metrics
    return app


def serve(runtime: Runtime, *, runtime_name: str, host: str = "127.0.0.1", port: int = 8090,
          max_new_tokens: int = 48, max_batch: int = 8, max_queue: int = 64, max_query_chars: int = 2000,
          window_s: float = 0.002, grace_s: float = 10.0, log_level: str = "warning", snap: bool = True,
          beams: int = 1) -> None:
    """Serve a loaded runtime until SIGTERM/SIGINT; ``snap``: mend and copy the query's ids (rewrite/snap.py);
    ``beams`` > 1: the first of the n best that parses (runtimes with nbest())."""
    from airflow_net.rewrite.snap import snap as snap_ids

    batcher = Batcher(runtime, max_new_tokens=max_new_tokens, max_batch=max_batch, max_queue=max_queue,
                      window_s=window_s, postprocess=snap_ids if snap else None, beams=beams, snap=snap)
    app = create_app(batcher, runtime_name=runtime_name, max_query_chars=max_query_chars)
    log.info("serving the rewrite model (%s, %s) on http://%s:%d/v1/rewrite (batches of up to %d, queue %d)",
             runtime_name, f"{batcher.beams} beams" if batcher.beams > 1 else "greedy", host, port, max_batch,
             max_queue)
    _Server(app, host, port, grace_s, log_level).run()
    log.info("server stopped")
