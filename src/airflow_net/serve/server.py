"""An OpenAI-compatible HTTP server over the continuous-batching engine (Starlette + uvicorn).

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both with ``"stream": true`` as server-sent
events), ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text format).

Behaviour a client can rely on:
- bad input gets HTTP 400 with an OpenAI-style ``{"error": {"message", "type", "param", "code"}}`` body:
  malformed JSON, wrong or out-of-range fields, unsupported options (``n`` > 1, ``logprobs``, ``tools``), and a
  prompt longer than a slot's context (``code: context_length_exceeded``, the message gives both numbers);
- requests beyond the slots wait in the engine's queue (up to ``max_queue``; past it, 503 with Retry-After);
- a client that disconnects (mid-stream or while waiting) has its request cancelled: the slot goes to the next;
- SIGTERM or SIGINT: stop accepting, let running requests finish for ``grace_s``, cancel the rest, exit 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from airflow_net.serve.engine import Delta, Engine, EngineClosed, PromptTooLong, Request, SamplingParams

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- request schemas
class _Body(BaseModel):
    # Clients send fields this server does not use (user, metadata, ...): ignored, as OpenAI's API does.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0
    min_p: Annotated[float, Field(ge=0, le=1)] = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: Annotated[int, Field(ge=1)] = 1
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    repeat_penalty: Annotated[float, Field(gt=0)] = 1.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: Any = None
    ignore_eos: bool = False  # llama-server's extension: generate exactly max_tokens (benchmarks)
    # AirflowNet's extension (chat only): the decoding rules of generate.copy_ids (ids copied from the first user
    # turn, brackets kept, names defined); what the in-process engine does, so an endpoint run answers the same
    copy_ids: bool = False

    def request_ids(self) -> tuple[str, ...]:
        return ()

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 16 or any(not s for s in stops):
            raise ValueError("stop must be a non-empty string or a list of at most 16 non-empty strings")
        return v

    def sampling(self, max_tokens: int) -> SamplingParams:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        bias = []
        for k, b in (self.logit_bias or {}).items():
            if not k.lstrip("-").isdigit():
                raise _BadRequest(f"logit_bias keys must be token ids (got {k!r})", "logit_bias")
            bias.append((int(k), -float("inf") if b <= -100 else float(b)))
        return SamplingParams(
            max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            min_p=self.min_p, seed=self.seed, stop=tuple(stops), ignore_eos=self.ignore_eos,
            repeat_penalty=self.repeat_penalty, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, logit_bias=tuple(bias), copy_ids=self.request_ids(),
        )

    def unsupported(self) -> None:
        if self.n != 1:
            raise _BadRequest("only n=1 is supported (send the request several times instead)", "n")
        if self.logprobs not in (None, False, 0):
            raise _BadRequest("logprobs are not supported by this server", "logprobs")


class CompletionBody(_Body):
    prompt: str | list[int] | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] = 1

    def unsupported(self) -> None:
        super().unsupported()
        if self.echo:
            raise _BadRequest("echo is not supported by this server", "echo")
        if self.suffix:
            raise _BadRequest("suffix (fill-in-the-middle) is not supported by this server", "suffix")
        if self.best_of != 1:
            raise _BadRequest("only best_of=1 is supported", "best_of")
        if isinstance(self.prompt, list) and self.prompt and isinstance(self.prompt[0], str) and len(self.prompt) != 1:
            raise _BadRequest("one prompt per request (got a list of several)", "prompt")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatBody(_Body):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def request_ids(self) -> tuple[str, ...]:
        if not self.copy_ids:
            return ()
        from airflow_net.serve.copy_ids import request_id_roles

        return request_id_roles(next((m.text() for m in self.messages if m.role == "user"), ""))

    def unsupported(self) -> None:
        super().unsupported()
        if self.tools:
            raise _BadRequest("tools (function calling) are not supported by this server", "tools")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise _BadRequest("only response_format type 'text' is supported", "response_format")


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def _validation_message(err: ValidationError) -> tuple[str, str | None]:
    parts, first = [], None
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"])
        first = first or (str(e["loc"][0]) if e["loc"] else None)
        got = f" (got {e['input']!r})" if "input" in e and e["type"] != "missing" else ""
        parts.append(f"{loc or 'body'}: {e['msg'].removeprefix('Value error, ')}{got}")
    return "; ".join(parts), first


# ---------------------------------------------------------------- metrics
class Metrics:
    """Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

    def __init__(self, engine: Engine) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        p = "airflow_net_"
        self.requests = Counter(p + "requests", "Finished requests by reason", ["finish_reason"], registry=r)
        self.http_errors = Counter(p + "http_errors", "Error responses by status", ["status"], registry=r)
        self.prompt_tokens = Counter(p + "prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.cached_tokens = Counter(p + "prompt_tokens_cached", "Prompt tokens reused from a slot's cache", registry=r)
        self.generated = Counter(p + "generated_tokens", "Generated tokens", registry=r)
        buckets = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
        self.ttft = Histogram(p + "time_to_first_token_seconds", "Submit to first token", buckets=buckets, registry=r)
        self.latency = Histogram(p + "request_duration_seconds", "Submit to last token", buckets=buckets, registry=r)
        self.queued = Histogram(p + "queue_wait_seconds", "Submit to slot", buckets=buckets, registry=r)
        Gauge(p + "slots", "Parallel slots", registry=r).set(engine.n_parallel)
        Gauge(p + "requests_running", "Requests in a slot", registry=r).set_function(lambda: engine.active)
        Gauge(p + "requests_queued", "Requests waiting for a slot", registry=r).set_function(
            lambda: engine.queue_length)

    def on_finish(self, req: Request) -> None:
        self.requests.labels(req.finish_reason or "unknown").inc()
        self.prompt_tokens.inc(len(req.prompt_tokens))
        self.cached_tokens.inc(req.cached_tokens)
        self.generated.inc(len(req.tokens))
        if req.t_end is not None:
            self.latency.observe(req.t_end - req.t_submit)
            if req.t_first is not None:
                self.ttft.observe(req.t_first - req.t_submit)
            self.queued.observe((req.t_start or req.t_end) - req.t_submit)


# ---------------------------------------------------------------- the app
class _Outbox:
    """Hands deltas from the engine's thread to one event loop: one wake-up of the loop for all the deltas the
    engine emits before the loop runs (a step's worth), rather than one per delta. Each wake-up is a write to
    the loop's self-pipe and a turn of the loop, and on a 2-core machine every turn it takes preempts one of
    llama.cpp's threads, which stalls both: they wait for each other at every op."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: list[tuple[_Stream, Delta]] = []
        self._lock = threading.Lock()

    def put(self, stream: _Stream, d: Delta) -> None:  # engine thread
        with self._lock:
            wake = not self._items
            self._items.append((stream, d))
        if wake:
            with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody is listening
                self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:  # event loop
        with self._lock:
            items, self._items = self._items, []
        for stream, d in items:
            stream._put(d)


class _Stream:
    """Output of one engine request, handed from the engine's thread to the event loop: every delta (streaming)
    or only the final one (a whole response)."""

    def __init__(self, outbox: _Outbox, keep_deltas: bool) -> None:
        self.outbox = outbox
        self.keep_deltas = keep_deltas
        self._items: collections.deque[Delta] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.final: asyncio.Future[Delta] = outbox.loop.create_future()

    def _put(self, d: Delta) -> None:  # event loop
        if self.keep_deltas:
            self._items.append(d)
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
        if d.finish_reason is not None and not self.final.done():
            self.final.set_result(d)

    def push(self, d: Delta) -> None:  # engine thread
        if self.keep_deltas or d.finish_reason is not None:
            self.outbox.put(self, d)

    async def next(self, timeout: float) -> Delta | None:
        """The next delta, or None if none came within ``timeout`` seconds (a plain future and a timer: cheaper
        per token than ``asyncio.wait_for``, which makes a task for every call before Python 3.12)."""
        if not self._items:
            waiter = self._waiter = self.outbox.loop.create_future()
            timer = self.outbox.loop.call_later(timeout, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._items:
                return None
        return self._items.popleft()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def create_app(engine: Engine, *, model_name: str | None = None, max_queue: int = 1024,
               poll_disconnect_s: float = 0.25) -> Starlette:
    """The ASGI app. The engine must be started (``engine.start()``) by the caller or by the app's lifespan."""
    name = model_name or engine.model_path.stem
    metrics = Metrics(engine)
    engine.on_finish = metrics.on_finish
    created = int(time.time())
    outboxes: dict[asyncio.AbstractEventLoop, _Outbox] = {}  # one per event loop (a server has one)

    def outbox() -> _Outbox:
        loop = asyncio.get_running_loop()
        box = outboxes.get(loop)
        if box is None:
            for old in [lp for lp in outboxes if lp.is_closed()]:
                del outboxes[old]
            box = outboxes[loop] = _Outbox(loop)
        return box

    async def parse(request: HTTPRequest, schema: type[_Body]) -> _Body:
        raw = await request.body()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _BadRequest(f"the request body is not valid JSON ({exc}); expected a JSON object") from None
        if not isinstance(data, dict):
            raise _BadRequest(f"the request body must be a JSON object, got {type(data).__name__}")
        try:
            body = schema.model_validate(data)
        except ValidationError as err:
            msg, param = _validation_message(err)
            raise _BadRequest(msg, param) from None
        body.unsupported()
        return body

    def submit(prompt: str | list[int], body: _Body, max_tokens: int | None, stream: _Stream) -> Request:
        if engine.queue_length >= max_queue:
            raise _BadRequest(f"the queue is full ({max_queue} requests waiting); retry later", status=503)
        tokens = engine.tokenize(prompt) if isinstance(prompt, str) else prompt
        room = engine.n_ctx - len(tokens)
        param = "messages" if isinstance(body, ChatBody) else "prompt"
        if not tokens:
            raise _BadRequest("the prompt is empty; expected some text (or token ids) to continue", param)
        if len(tokens) >= engine.n_ctx:
            try:
                engine.check_prompt(len(tokens))
            except PromptTooLong as exc:
                raise _BadRequest(str(exc), param, "context_length_exceeded") from None
        # Without max_tokens a request may use the rest of its slot's context (it stops at the end: "length").
        sp = body.sampling(max_tokens or room)
        try:
            return engine.submit(tokens, sp, on_delta=stream.push)
        except EngineClosed:
            raise _BadRequest("the server is shutting down", status=503) from None

    async def run(request: HTTPRequest, schema: type[_Body]) -> Response:
        try:
            body = await parse(request, schema)
            if isinstance(body, ChatBody):
                prompt: str | list[int] = engine.render_chat([{"role": m.role if m.role != "developer" else "system",
                                                                "content": m.text()} for m in body.messages])
                max_tokens = body.max_completion_tokens or body.max_tokens
            else:
                assert isinstance(body, CompletionBody)
                p = body.prompt
                prompt = p[0] if isinstance(p, list) and p and isinstance(p[0], str) else p  # type: ignore[assignment]
                if isinstance(prompt, list) and any(not 0 <= t < engine.n_vocab for t in prompt):
                    raise _BadRequest(f"prompt token ids must be in [0, {engine.n_vocab})", "prompt")
                max_tokens = body.max_tokens if body.max_tokens is not None else 16  # OpenAI's default
            stream = _Stream(outbox(), keep_deltas=body.stream)
            req = submit(prompt, body, max_tokens, stream)
        except _BadRequest as exc:
            metrics.http_errors.labels(str(exc.status)).inc()
            return _error(exc.status, exc.message, exc.param, exc.code,
                          {"Retry-After": "1"} if exc.status == 503 else None)
        except ValueError as exc:  # SamplingParams' own checks, template errors
            metrics.http_errors.labels("400").inc()
            return _error(400, str(exc))
        chat = isinstance(body, ChatBody)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(_sse(request, req, stream, rid, chat, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _whole(request, req, stream, rid, chat)

    def _usage(req: Request) -> dict[str, Any]:
        n_p, n_c = len(req.prompt_tokens), len(req.tokens)
        return {"prompt_tokens": n_p, "completion_tokens": n_c, "total_tokens": n_p + n_c,
                "prompt_tokens_details": {"cached_tokens": req.cached_tokens}}

    def _timings(req: Request) -> dict[str, float]:
        end = req.t_end or time.perf_counter()
        ms = lambda t: round(((t or end) - req.t_submit) * 1000, 2)  # noqa: E731
        return {"queued_ms": ms(req.t_start), "ttft_ms": ms(req.t_first), "total_ms": ms(end)}

    async def _whole(request: HTTPRequest, req: Request, stream: _Stream, rid: str, chat: bool) -> Response:
        try:
            while not stream.final.done():
                await asyncio.wait([stream.final], timeout=poll_disconnect_s)
                if not stream.final.done() and await request.is_disconnected():
                    req.cancel()
                    return Response(status_code=499)
        except asyncio.CancelledError:
            req.cancel()
            raise
        last = stream.final.result()
        if last.finish_reason in ("error", "cancelled"):
            metrics.http_errors.labels("500" if last.finish_reason == "error" else "503").inc()
            return _error(500 if last.finish_reason == "error" else 503,
                          last.error or "the request was cancelled (the server is shutting down)")
        choice: dict[str, Any] = {"index": 0, "finish_reason": last.finish_reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": req.text}
        else:
            choice["text"] = req.text
        return JSONResponse({
            "id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": name, "choices": [choice], "usage": _usage(req), "timings": _timings(req),
        })

    async def _sse(request: HTTPRequest, req: Request, stream: _Stream, rid: str, chat: bool, include_usage: bool
                   ) -> AsyncIterator[str]:
        obj = "chat.completion.chunk" if chat else "text_completion"
        t = int(time.time())

        def chunk(text: str | None, finish: str | None, first: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else (
                    {"content": text} if text else {})
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            return "data: " + json.dumps({"id": rid, "object": obj, "created": t, "model": name,
                                          "choices": [choice]}) + "\n\n"

        finished = False
        try:
            if chat:
                yield chunk(None, None, first=True)
            while True:
                d = await stream.next(poll_disconnect_s)
                if d is None:
                    # nothing to write (still queued, or a long prompt): a write would tell us the client left
                    if await request.is_disconnected():
                        return
                    continue
                if d.finish_reason in ("error", "cancelled"):
                    msg = d.error or "the request was cancelled (the server is shutting down)"
                    yield "data: " + json.dumps({"error": {"message": msg, "type": "server_error"}}) + "\n\n"
                    break
                if d.finish_reason is not None:
                    yield chunk(d.text, d.finish_reason)
                    if include_usage:
                        yield "data: " + json.dumps({"id": rid, "object": obj, "created": t, "model": name,
                                                     "choices": [], "usage": _usage(req),
                                                     "timings": _timings(req)}) + "\n\n"
                    break
                if d.text:
                    yield chunk(d.text, None)
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:  # the client went away (Starlette cancelled us) or the server is stopping
                req.cancel()

    async def chat_completions(request: HTTPRequest) -> Response:
        return await run(request, ChatBody)

    async def completions(request: HTTPRequest) -> Response:
        return await run(request, CompletionBody)

    async def models(request: HTTPRequest) -> Response:
        meta = {"n_ctx_slot": engine.n_ctx, "n_parallel": engine.n_parallel, "n_params": engine.n_params,
                "size_bytes": engine.model_size, "engine": "python"}
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "airflow-net", "meta": meta}]})

    async def health(request: HTTPRequest) -> Response:
        return JSONResponse({"status": "ok", "slots_idle": engine.n_parallel - engine.active,
                             "slots_processing": engine.active, "queued": engine.queue_length})

    async def prom(request: HTTPRequest) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.start()
        yield
        # uvicorn has already let running requests finish (grace period); cancel what is left.
        await asyncio.get_running_loop().run_in_executor(None, lambda: engine.stop(drain=False))

    async def not_found(request: HTTPRequest, exc: Exception) -> Response:
        return _error(404, f"no route {request.method} {request.url.path}; see /v1/models, /v1/chat/completions, "
                           "/v1/completions, /health, /metrics")

    async def method_not_allowed(request: HTTPRequest, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prom, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.engine = engine
    app.state.metrics = metrics
    return app


class _Server:
    """uvicorn with a clean exit on SIGTERM: uvicorn re-raises the signal after its graceful shutdown (exit status
    143); a server asked to stop that stopped cleanly should exit 0."""

    def __init__(self, app: Starlette, host: str, port: int, grace_s: float, log_level: str) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[override]
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                handled = (signal.SIGINT, signal.SIGTERM)
                original = {s: signal.signal(s, self.handle_exit) for s in handled}
                try:
                    yield
                finally:
                    for s, h in original.items():
                        signal.signal(s, h)

        cfg = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                             timeout_graceful_shutdown=int(max(1, grace_s)), lifespan="on")
        self.server = Server(cfg)

    def run(self) -> None:
        self.server.run()


def serve(engine: Engine, *, host: str = "127.0.0.1", port: int = 8080, model_name: str | None = None,
          max_queue: int = 1024, grace_s: float = 10.0, log_level: str = "warning") -> None:
    """Serve until SIGTERM/SIGINT; the engine is started here and stopped (and closed) at the end."""
    app = create_app(engine, model_name=model_name, max_queue=max_queue)
    log.info("serving %s on http://%s:%d (%d slots x %d tokens)", engine.model_path.name, host, port,
             engine.n_parallel, engine.n_ctx)
    try:
        _Server(app, host, port, grace_s, log_level).run()
    finally:
        engine.close()
    log.info("server stopped")
