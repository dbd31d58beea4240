"""The OpenAI-compatible server over the engine, on 127.0.0.1 only: errors, streams, disconnects, shutdown."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_net.serve.engine import Engine
from airflow_net.serve.server import create_app
from tests.test_engine import SYSTEM, tiny_dir, tiny_gguf  # noqa: F401  (tiny_dir is a fixture)

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An app on a uvicorn server in a background thread (127.0.0.1, a free port)."""

    def __init__(self, engine: Engine, **kw) -> None:
        import uvicorn

        self.port = free_port()
        self.app = create_app(engine, **kw)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error",
                                                   lifespan="on", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def call(port: int, method: str, path: str, body: bytes | dict | None = None, timeout: float = 60
         ) -> tuple[int, dict | str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    raw = r.read().decode()
    conn.close()
    try:
        return r.status, json.loads(raw)
    except json.JSONDecodeError:
        return r.status, raw


def stream(port: int, path: str, body: dict, timeout: float = 60) -> tuple[http.client.HTTPConnection, Iterator[dict]]:
    """Open a streaming request; yields the JSON events (the final [DONE] as {"done": True})."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=json.dumps({**body, "stream": True}), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, r.read()

    def events() -> Iterator[dict]:
        for line in r:
            line = line.strip()
            if line.startswith(b"data: "):
                payload = line[6:]
                yield {"done": True} if payload == b"[DONE]" else json.loads(payload)

    return conn, events()


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def chat(content: str, **kw) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}],
            "temperature": 0, **kw}


@pytest.fixture(scope="module")
def server(tiny_dir: Path):  # noqa: F811
    engine = Engine(tiny_gguf(tiny_dir, "F16"), n_parallel=4, n_ctx=512, n_threads=2)
    srv = Server(engine, max_queue=64)
    yield srv
    srv.stop()
    engine.close()


@pytest.mark.parametrize(("body", "status", "param", "needle"), [
    (b'{"prompt": "x", bad', 400, None, "not valid JSON"),
    (b"[1, 2]", 400, None, "must be a JSON object"),
    ({"prompt": "x", "max_tokens": "many"}, 400, "max_tokens", "valid integer"),
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens", "greater than or equal to 1"),
    ({"prompt": "x", "temperature": 5}, 400, "temperature", "less than or equal to 2"),
    ({"prompt": "x", "n": 2}, 400, "n", "only n=1"),
    ({"prompt": "x", "logprobs": 3}, 400, "logprobs", "not supported"),
    ({"prompt": "x", "stop": [""]}, 400, "stop", "non-empty"),
    ({"max_tokens": 3}, 400, "prompt", "Field required"),
    ({"prompt": [1, 10**9]}, 400, "prompt", "token ids must be in"),
    ({"prompt": ""}, 400, "prompt", "the prompt is empty"),
])
def test_bad_completion_requests_get_400_with_a_message(server: Server, body, status, param, needle) -> None:
    code, out = call(server.port, "POST", "/v1/completions", body)
    assert code == status, out
    assert out["error"]["type"] == "invalid_request_error"
    assert needle in out["error"]["message"]
    assert out["error"]["param"] == param


def test_bad_chat_requests_get_400(server: Server) -> None:
    for body, needle in [({"messages": []}, "at least 1 item"),
                         ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
                         ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages.0.content"),
                         (chat("hi", tools=[{"type": "function"}]), "tools")]:
        code, out = call(server.port, "POST", "/v1/chat/completions", body)
        assert code == 400 and needle in out["error"]["message"], out


def test_a_prompt_longer_than_the_context_gets_400_with_the_limits(server: Server) -> None:
    code, out = call(server.port, "POST", "/v1/chat/completions", chat("load the files " * 400, max_tokens=8))
    assert code == 400
    assert out["error"]["code"] == "context_length_exceeded" and out["error"]["param"] == "messages"
    assert "a slot's context holds 512" in out["error"]["message"] and "prompt has" in out["error"]["message"]


def test_unknown_routes_and_methods(server: Server) -> None:
    assert call(server.port, "GET", "/v2/nothing")[0] == 404
    code, out = call(server.port, "GET", "/v1/completions")
    assert code == 405 and "not allowed" in out["error"]["message"]


def test_models_health_and_metrics(server: Server) -> None:
    code, models = call(server.port, "GET", "/v1/models")
    assert code == 200 and models["data"][0]["meta"]["n_parallel"] == 4 and models["data"][0]["meta"]["n_ctx_slot"] == 512
    code, health = call(server.port, "GET", "/health")
    assert code == 200 and health["status"] == "ok" and health["slots_idle"] + health["slots_processing"] == 4
    call(server.port, "POST", "/v1/completions", {"prompt": "def load():", "max_tokens": 3, "ignore_eos": True})
    code, text = call(server.port, "GET", "/metrics")
    assert code == 200 and "airflow_net_generated_tokens_total" in text and "process_resident_memory_bytes" in text
    assert 'airflow_net_slots 4.0' in text


def test_completion_and_chat_shapes(server: Server) -> None:
    code, out = call(server.port, "POST", "/v1/completions", {"prompt": "def load():", "max_tokens": 5,
                                                              "temperature": 0, "ignore_eos": True})
    assert code == 200 and out["object"] == "text_completion" and out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 5
    code, out = call(server.port, "POST", "/v1/chat/completions", chat("a daily DAG", max_tokens=6, ignore_eos=True))
    assert code == 200 and out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["role"] == "assistant" and out["usage"]["completion_tokens"] == 6
    assert out["usage"]["prompt_tokens"] > 10


def test_concurrent_streams_all_complete_with_the_one_at_a_time_answers(server: Server) -> None:
    """Six streams against four slots (two queue); greedy answers equal the same requests sent one by one
    (the F16 model is exact under batching, see test_engine)."""
    bodies = [chat(f"a DAG number {i} that loads {3 * i} tables", max_tokens=40, ignore_eos=True,
                   stream_options={"include_usage": True}) for i in range(6)]
    alone = [call(server.port, "POST", "/v1/chat/completions", b)[1]["choices"][0]["message"]["content"]
             for b in bodies]
    results: dict[int, dict] = {}

    def run(i: int) -> None:
        conn, events = stream(server.port, "/v1/chat/completions", bodies[i])
        evs = list(events)
        conn.close()
        results[i] = {"text": "".join(e["choices"][0]["delta"].get("content", "") for e in evs
                                      if e.get("choices")),
                      "finish": [e["choices"][0]["finish_reason"] for e in evs if e.get("choices")][-1],
                      "usage": next(e["usage"] for e in evs if e.get("usage")),
                      "done": evs[-1] == {"done": True}}

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(6))
    for i, r in results.items():
        assert r["done"] and r["finish"] == "length" and r["usage"]["completion_tokens"] == 40
        assert r["text"] == alone[i]


def test_a_client_that_disconnects_frees_its_slot(tiny_dir: Path) -> None:  # noqa: F811
    engine = Engine(tiny_gguf(tiny_dir, "F16"), n_parallel=1, n_ctx=2048, n_threads=2)
    srv = Server(engine)
    try:
        long = chat("a long DAG", max_tokens=2000, ignore_eos=True)
        # streaming: read a little, then hang up
        conn, events = stream(srv.port, "/v1/chat/completions", long)
        for _, _ in zip(range(3), events, strict=False):
            pass
        queued: dict = {}
        waiter = threading.Thread(target=lambda: queued.update(
            out=call(srv.port, "POST", "/v1/chat/completions", chat("short", max_tokens=4, ignore_eos=True))))
        waiter.start()
        assert wait_for(lambda: call(srv.port, "GET", "/health")[1]["queued"] == 1)  # one slot: the second waits
        t0 = time.perf_counter()
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        waiter.join(30)
        took = time.perf_counter() - t0
        code, out = queued["out"]
        assert code == 200 and out["usage"]["completion_tokens"] == 4
        assert took < 3.0  # not after the 2000 tokens of the first

        # non-streaming: the server polls the connection while it waits
        s = socket.create_connection(("127.0.0.1", srv.port))
        body = json.dumps(long).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert wait_for(lambda: call(srv.port, "GET", "/health")[1]["slots_processing"] == 1)
        s.close()
        assert wait_for(lambda: call(srv.port, "GET", "/health")[1]["slots_processing"] == 0)
        assert wait_for(lambda: 'airflow_net_requests_total{finish_reason="cancelled"} 2.0'
                        in call(srv.port, "GET", "/metrics")[1])

        # a stream still waiting in the queue (nothing written yet): hanging up takes it out of the queue
        busy = socket.create_connection(("127.0.0.1", srv.port))
        busy.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert wait_for(lambda: call(srv.port, "GET", "/health")[1]["slots_processing"] == 1)
        waiting = socket.create_connection(("127.0.0.1", srv.port))
        sbody = json.dumps({**long, "stream": True}).encode()
        waiting.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(sbody)}\r\n\r\n".encode() + sbody)
        assert wait_for(lambda: call(srv.port, "GET", "/health")[1]["queued"] == 1)
        waiting.close()
        assert wait_for(lambda: call(srv.port, "GET", "/health")[1]["queued"] == 0, timeout=3)
        assert call(srv.port, "GET", "/health")[1]["slots_processing"] == 1  # the first one runs on
        busy.close()
    finally:
        srv.stop()
        engine.close()


def test_sigterm_lets_running_requests_finish_and_exits_cleanly(tiny_dir: Path) -> None:  # noqa: F811
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "airflow_net.cli", "serve", "--model", str(tiny_gguf(tiny_dir, "F16")),
                             "--parallel", "2", "--ctx-size", "1024", "--port", str(port), "--threads", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if call(port, "GET", "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "server did not start"
                time.sleep(0.2)
        conn, events = stream(port, "/v1/completions", {"prompt": "def load():", "max_tokens": 300,
                                                        "ignore_eos": True, "temperature": 0})
        first = next(events)
        assert first["choices"][0]["finish_reason"] is None
        proc.send_signal(signal.SIGTERM)
        rest = list(events)  # the running request still finishes
        conn.close()
        assert rest[-1] == {"done": True} and rest[-2]["choices"][0]["finish_reason"] == "length"
        assert proc.wait(30) == 0
        with pytest.raises(OSError):
            call(port, "GET", "/health", timeout=2)
        assert "server stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_llama_server_engine_serves_the_same_api(tiny_dir: Path) -> None:  # noqa: F811
    """`serve --engine llama-server` hands the process to llama.cpp's own server (skipped where it is not built)."""
    from airflow_net.serve.llama_server import find_llama_server
    from airflow_net.utils import UserError

    try:
        find_llama_server()
    except UserError:
        pytest.skip("llama-server not built (make llama-server)")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "airflow_net.cli", "serve", "--engine", "llama-server",
                             "--model", str(tiny_gguf(tiny_dir, "F16")), "--parallel", "2", "--ctx-size", "512",
                             "--port", str(port), "--threads", "2", "--alias", "tiny"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _up(port), timeout=60)
        code, out = call(port, "POST", "/v1/chat/completions", chat("a daily DAG", max_tokens=6, ignore_eos=True))
        assert code == 200 and out["usage"]["completion_tokens"] == 6 and out["model"] == "tiny"
        code, out = call(port, "POST", "/v1/completions", {"prompt": "x", "max_tokens": "many"})
        assert code == 400
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _up(port: int) -> bool:
    try:
        return call(port, "GET", "/health", timeout=2)[0] == 200
    except OSError:
        return False


def test_the_outbox_wakes_the_loop_once_for_a_steps_deltas_and_keeps_their_order() -> None:
    import asyncio

    from airflow_net.serve.engine import Delta
    from airflow_net.serve.server import _Outbox, _Stream

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wakes = 0
        real = loop.call_soon_threadsafe

        def counting(callback, *a):  # noqa: ANN001, ANN002
            nonlocal wakes
            wakes += callback == box._drain  # (only the outbox's wake-ups count)
            return real(callback, *a)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        box = _Outbox(loop)
        a, b = _Stream(box, keep_deltas=True), _Stream(box, keep_deltas=False)

        def engine_step() -> None:  # as the engine's thread does: every slot's delta, then the final ones
            for i in range(3):
                a.push(Delta(f"a{i}", [i]))
                b.push(Delta(f"b{i}", [i]))  # a whole response: only the final delta crosses over
            a.push(Delta("", [], finish_reason="length"))
            b.push(Delta("", [], finish_reason="stop"))

        # The engine's thread pushes a whole step while the loop is busy (here: blocked joining it), as when the
        # loop is serving other requests. With the loop idle it may drain between two pushes, which is fine but
        # would make the count racy.
        engine = threading.Thread(target=engine_step)
        engine.start()
        engine.join()
        assert wakes == 1
        got = [await a.next(1.0) for _ in range(4)]
        assert [d.text for d in got] == ["a0", "a1", "a2", ""] and got[-1].finish_reason == "length"
        assert (await b.final).finish_reason == "stop" and not b._items
        assert (await a.final).finish_reason == "length"
        # nothing more: next() gives None after its timeout, and a later delta wakes the loop again
        t = time.perf_counter()
        assert await a.next(0.05) is None
        assert time.perf_counter() - t >= 0.04
        pending = asyncio.ensure_future(a.next(5.0))
        await asyncio.sleep(0)
        late = threading.Thread(target=a.push, args=(Delta("late", [9]),))
        late.start()
        late.join()
        assert (await asyncio.wait_for(pending, 2)).text == "late" and wakes == 2

    asyncio.run(main())


def test_a_chat_request_can_ask_for_the_copy_ids_rules() -> None:
    from airflow_net.serve.copy_ids import request_id_roles
    from airflow_net.serve.server import ChatBody

    request = "Need a DAG called `orders_sync`: `pull_orders` -> `load_orders`."
    body = {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": request},
                         {"role": "user", "content": "fix it"}]}
    assert ChatBody.model_validate(body).sampling(16).copy_ids == ()  # not asked: the model decodes freely
    asked = ChatBody.model_validate(body | {"copy_ids": True}).sampling(16)
    assert asked.copy_ids == request_id_roles(request)  # the first user turn is the request
