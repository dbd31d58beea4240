"""`airflow-net rewrite-serve` on a real uvicorn server (127.0.0.1) with a tiny random T5, its client and the
chat CLI's --url and interactive modes."""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from airflow_net.cli import main
from airflow_net.rewrite.client import ApiError, rewrite_api, rewrite_bench_api
from airflow_net.rewrite.runtimes import Generation, Runtime, load
from airflow_net.rewrite.server import Batcher, create_app
from tests.support.tiny_t5 import LINES, build_tiny_t5

MAX_NEW = 8
MAX_CHARS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The app over a runtime on a uvicorn server in a background thread."""

    def __init__(self, runtime: Runtime, name: str = "torch-fp32", **kw) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.batcher = Batcher(runtime, max_new_tokens=MAX_NEW, max_batch=kw.pop("max_batch", 4),
                               max_queue=kw.pop("max_queue", 64), window_s=kw.pop("window_s", 0.002))
        self.app = create_app(self.batcher, runtime_name=name, max_query_chars=MAX_CHARS)
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


def call(port: int, method: str, path: str, body: bytes | dict | None = None
         ) -> tuple[int, dict | str, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    raw = r.read().decode()
    conn.close()
    try:
        out: dict | str = json.loads(raw)
    except json.JSONDecodeError:
        out = raw
    return r.status, out, dict(r.getheaders())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny T5 whose answer depends on its query: at the default init scale a random T5 writes the same text
    for every input, which could not tell one request's answer from another's; weights x10 make it input-driven."""
    import torch
    from transformers import T5ForConditionalGeneration

    folder = build_tiny_t5(tmp_path_factory.mktemp("t5") / "m")
    model = T5ForConditionalGeneration.from_pretrained(folder)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" not in name:
                p.mul_(10)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def runtime(folder: Path) -> Runtime:
    return load("torch-fp32", str(folder), threads=1)


@pytest.fixture(scope="module")
def server(runtime: Runtime):
    s = Server(runtime)
    yield s
    s.stop()


def test_a_good_request_gets_the_models_answer(server: Server, runtime: Runtime) -> None:
    code, out, _ = call(server.port, "POST", "/v1/rewrite", {"query": f"  {LINES[0]} "})
    assert code == 200, out
    ref = runtime.generate([LINES[0]], MAX_NEW)  # the query is stripped before decoding
    assert out["rewrite"] == ref.texts[0] and out["tokens"] == ref.tokens[0]
    assert out["runtime"] == "torch-fp32" and 0 < out["decode_ms"] <= out["ms"]


@pytest.mark.parametrize(("body", "needle"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    ({"text": "x"}, 'missing field "query"'),
    ({"query": ""}, "is empty"),
    ({"query": " \n "}, "is empty"),
    ({"query": 3}, "must be a string, got int"),
    ({"query": ["a"]}, "must be a string, got list"),
    ({"query": "x" * (MAX_CHARS + 1)}, f"at most {MAX_CHARS}"),
])
def test_bad_requests_get_400_with_a_message(server: Server, body, needle) -> None:
    code, out, _ = call(server.port, "POST", "/v1/rewrite", body)
    assert code == 400
    assert needle in out["error"]["message"]


def test_unknown_routes_and_methods(server: Server) -> None:
    assert call(server.port, "GET", "/v1/nothing")[0] == 404
    code, out, _ = call(server.port, "GET", "/v1/rewrite")
    assert code == 405 and "GET" in out["error"]["message"]


def test_concurrent_requests_each_get_their_own_answer(server: Server, runtime: Runtime) -> None:
    queries = LINES[:16]
    alone = runtime.generate(queries, MAX_NEW).texts
    assert len(set(alone)) > 8, "the tiny model should answer different queries differently"
    run = rewrite_bench_api(server.url, queries, concurrency=6)
    assert run.statuses == [200] * len(queries), run.errors
    assert run.texts == alone
    assert all(c >= s > 0 for c, s in zip(run.client_ms, run.server_ms, strict=True))
    summary = run.summary()
    assert summary["ok"] == 16 and summary["throughput_qps"] > 0
    assert summary["client_ms"]["n"] == 16 and summary["client_ms"]["p50"] <= summary["client_ms"]["max"]


def test_health_and_metrics(server: Server) -> None:
    code, health, _ = call(server.port, "GET", "/health")
    assert code == 200 and health == {"status": "ok", "runtime": "torch-fp32", "queued": 0, "max_queue": 64,
                                      "max_batch": 4}
    before = _metric(server, 'airflow_net_rewrite_requests_total{status="200"}')
    bad = _metric(server, 'airflow_net_rewrite_requests_total{status="400"}')
    assert call(server.port, "POST", "/v1/rewrite", {"query": LINES[3]})[0] == 200
    assert call(server.port, "POST", "/v1/rewrite", {"query": ""})[0] == 400
    assert _metric(server, 'airflow_net_rewrite_requests_total{status="200"}') == before + 1
    assert _metric(server, 'airflow_net_rewrite_requests_total{status="400"}') == bad + 1
    assert _metric(server, "airflow_net_rewrite_request_duration_seconds_count") >= 1
    assert _metric(server, 'airflow_net_rewrite_request_duration_seconds_bucket{le="+Inf"}') >= 1
    assert _metric(server, "airflow_net_rewrite_queue_depth") == 0
    assert _metric(server, "airflow_net_rewrite_batch_size_count") >= 1


def _metric(server: Server, name: str) -> float:
    code, text, headers = call(server.port, "GET", "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain")
    for line in str(text).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


class Gated(Runtime):
    """A fake runtime that holds every generate() until the gate opens and records the batches it got."""

    name = "gated"

    def __init__(self, batches: bool = False) -> None:
        self.decodes_batches = batches
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls: list[list[str]] = []

    @classmethod
    def load(cls, folder: str, threads: int, quant: str | None = None) -> Gated:
        return cls()

    def generate(self, queries: list[str], max_new_tokens: int, ignore_eos: bool = False) -> Generation:
        self.calls.append(list(queries))
        self.started.set()
        assert self.gate.wait(20), "the test never opened the gate"
        return Generation([f"R:{q}" for q in queries], [1.0] * len(queries), [len(q) for q in queries])


def _post_in_thread(port: int, query: str, out: dict[str, tuple]) -> threading.Thread:
    t = threading.Thread(target=lambda: out.__setitem__(query, call(port, "POST", "/v1/rewrite", {"query": query})))
    t.start()
    return t


def _wait(cond, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_queue_gets_503_with_a_message() -> None:
    rt = Gated()
    s = Server(rt, name="gated", max_batch=1, max_queue=1)
    try:
        got: dict[str, tuple] = {}
        first = _post_in_thread(s.port, "a", got)
        assert rt.started.wait(10)  # the worker holds "a"
        second = _post_in_thread(s.port, "b", got)
        _wait(lambda: s.batcher.queued == 1)  # "b" waits in the queue
        code, out, headers = call(s.port, "POST", "/v1/rewrite", {"query": "c"})
        assert code == 503 and "queue is full (1 requests waiting)" in out["error"]["message"]
        assert headers["retry-after"] == "1"
        rt.gate.set()
        first.join(10)
        second.join(10)
        assert got["a"][1]["rewrite"] == "R:a" and got["b"][1]["rewrite"] == "R:b"
        assert rt.calls == [["a"], ["b"]]
        assert 'airflow_net_rewrite_requests_total{status="503"} 1.0' in call(s.port, "GET", "/metrics")[1]
    finally:
        rt.gate.set()
        s.stop()


def test_queued_queries_reach_a_batching_runtime_in_one_call_in_order() -> None:
    rt = Gated(batches=True)
    s = Server(rt, name="gated", max_batch=3, window_s=0.0)
    try:
        got: dict[str, tuple] = {}
        threads = [_post_in_thread(s.port, "q0", got)]
        assert rt.started.wait(10)
        for q in ("q1", "q2", "q3", "q4"):
            threads.append(_post_in_thread(s.port, q, got))
            _wait(lambda: s.batcher.queued == len(threads) - 1)  # arrival order is the queue's order
        rt.gate.set()
        for t in threads:
            t.join(10)
        assert rt.calls == [["q0"], ["q1", "q2", "q3"], ["q4"]]
        assert {q: r[1]["rewrite"] for q, r in got.items()} == {f"q{i}": f"R:q{i}" for i in range(5)}
        assert [got[f"q{i}"][1]["batch"] for i in range(5)] == [1, 3, 3, 3, 1]
    finally:
        rt.gate.set()
        s.stop()


def test_stopping_cancels_what_is_queued() -> None:
    rt = Gated()
    b = Batcher(rt, max_new_tokens=4, max_batch=1, max_queue=4)
    b.start()
    running = b.submit("a")
    assert rt.started.wait(10)
    queued = b.submit("b")
    threading.Timer(0.2, rt.gate.set).start()
    b.stop()
    assert running.result(5).text == "R:a" and queued.cancelled()
    with pytest.raises(Exception, match="shutting down"):
        b.submit("c")


def test_answers_are_postprocessed_with_their_own_query() -> None:
    rt = Gated()
    rt.gate.set()
    b = Batcher(rt, max_new_tokens=4, max_batch=4, max_queue=4, postprocess=lambda text, q: f"{text}|{q.upper()}")
    b.start()
    try:
        futs = {q: b.submit(q) for q in ("a", "b", "c")}
        assert {q: f.result(10).text for q, f in futs.items()} == {q: f"R:{q}|{q.upper()}" for q in futs}
    finally:
        b.stop()


class Beams(Gated):
    """A fake runtime with a beam search: the best beam does not parse, the second does."""

    GOOD = "dag orders_sync | schedule @daily | load_orders[PythonOperator] >> refresh_view[BashOperator]"

    def nbest(self, query: str, n: int, max_new_tokens: int) -> tuple[list[str], float, list[int]]:
        self.calls.append([f"nbest:{n}:{query}"])
        return ["dag orders_sync | load_orders >>", self.GOOD, "x"][:n], 2.5, [7, 11, 1][:n]


def test_beams_answer_the_first_beam_that_parses_with_its_tokens() -> None:
    rt = Beams()
    query = "pls dag orders_sync daily: load_orders then refresh_view"
    b = Batcher(rt, max_new_tokens=16, max_batch=2, max_queue=4, beams=3)
    b.start()
    try:
        ans = b.submit(query).result(10)
        assert ans.text == Beams.GOOD
        assert (ans.decode_ms, ans.tokens) == (2.5, 11)  # the chosen beam's tokens, not the first's
        assert rt.calls == [[f"nbest:3:{query}"]]
    finally:
        b.stop()
    greedy = Batcher(Gated(), max_new_tokens=16, beams=3)  # no nbest(): greedy, as the other runtimes
    assert greedy.beams == 1
    with pytest.raises(ValueError, match="beams >= 1"):
        Batcher(rt, max_new_tokens=16, beams=0)


def test_bad_model_or_runtime_fails_at_start_with_one_line(tmp_path, folder, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no models/rewrite/runtimes here: the default runtime has no export
    port = free_port()
    for argv, needle in ((["--model", str(tmp_path), "--runtime", "torch-int8"], "config.json"),
                         ([], "rewrite_export"),
                         (["--model", str(folder), "--runtime", "nope"], "unknown runtime 'nope'"),
                         (["--model", str(folder), "--max-batch", "0"], "--max-batch must be >= 1")):
        with pytest.raises(SystemExit) as e:
            main(["rewrite-serve", "--port", str(port), *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and needle in err and err.count("\n") == 1, err
    with socket.socket() as sock:  # nothing was left listening
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_chat_cli_with_url_one_shot_and_piped(server: Server, runtime: Runtime, capsys, monkeypatch) -> None:
    ref = runtime.generate(LINES[:2], MAX_NEW).texts
    with pytest.raises(SystemExit) as e:
        main(["rewrite", "--url", server.url, LINES[0]])
    assert e.value.code == 0
    line = capsys.readouterr().out.splitlines()
    assert len(line) == 1 and re.fullmatch(re.escape(ref[0]) + r"\t\d+\.\d ms", line[0])
    # a piped line that the server refuses (too long) is reported and the next one still answered
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{LINES[0]}\n\n{'x' * (MAX_CHARS + 5)}\n{LINES[1]}\n"))
    with pytest.raises(SystemExit):
        main(["rewrite", "--url", server.url])
    cap = capsys.readouterr()
    assert [ln.split("\t")[0] for ln in cap.out.splitlines()] == ref
    assert "HTTP 400" in cap.err and f"at most {MAX_CHARS}" in cap.err


def test_chat_cli_url_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["rewrite", "--url", f"http://127.0.0.1:{free_port()}", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "rewrite-serve" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="expected an http:// URL"):
        rewrite_api("ftp://host", "x")
    with pytest.raises(ApiError):
        rewrite_api(f"127.0.0.1:{free_port()}", "x")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("end", ["quit", "", None])
def test_chat_loop_on_a_terminal_stops_at_quit_empty_line_or_eof(folder, capsys, monkeypatch, end) -> None:
    lines = [LINES[0], LINES[1]] + ([end, LINES[2]] if end is not None else [])
    feed = iter(lines)
    prompts: list[str] = []

    def fake_input(prompt: str) -> str:
        prompts.append(prompt)
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("sys.stdin", _Tty())
    monkeypatch.setattr("builtins.input", fake_input)
    with pytest.raises(SystemExit) as e:
        main(["rewrite", "--model", str(folder), "--runtime", "torch-fp32", "--max-new-tokens", "4"])
    assert e.value.code == 0
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln]
    assert len(out) == 2 and all(re.search(r"\t\d+\.\d ms$", ln) for ln in out)
    assert len(prompts) == 3 and next(feed, "drained") == (LINES[2] if end is not None else "drained")


@pytest.mark.integration
def test_the_real_command_serves_and_exits_0_on_sigterm(folder) -> None:
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "airflow_net.cli", "rewrite-serve", "--model", str(folder),
                             "--runtime", "torch-fp32", "--port", str(port), "--max-new-tokens", str(MAX_NEW)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.time() < deadline, "the server did not come up"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        out = rewrite_api(f"http://127.0.0.1:{port}", LINES[5])
        assert out["runtime"] == "torch-fp32" and out["tokens"] >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
