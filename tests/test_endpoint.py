"""The OpenAI-compatible endpoint backend against a local server that fails some requests on purpose."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_net.generate.endpoint import EndpointError, endpoint_backend


class Flaky(BaseHTTPRequestHandler):
    counts: dict[str, int] = {}
    lock = threading.Lock()
    fail_first = 2  # each distinct request fails this many times (429, then 503) before it is answered
    served: list[str] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = body["messages"][-1]["content"]
        with self.lock:
            n = self.counts.get(key, 0)
            self.counts[key] = n + 1
        if n < self.fail_first:
            self.send_response(429 if n == 0 else 503)
            self.end_headers()
            return
        with self.lock:
            self.served.append(key)
        out = json.dumps({"choices": [{"message": {"content": f"echo {key} t={body['temperature']} s={body['seed']}"},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    Flaky.counts, Flaky.served = {}, []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_flaky_server_nothing_lost_nothing_duplicated(server):
    Flaky.fail_first = 2
    be = endpoint_backend(server, concurrency=3, attempts=4, backoff_s=0.01, timeout_s=5)
    convs = [[{"role": "user", "content": f"r{i}"}] for i in range(12)]
    rows = be(convs, temperature=0.5, seed=[100 + i for i in range(12)])
    assert [r["text"] for r in rows] == [f"echo r{i} t=0.5 s={100 + i}" for i in range(12)]
    assert all(r["attempts"] == 3 and r["completion_tokens"] == 4 for r in rows)
    assert sorted(Flaky.served) == sorted(f"r{i}" for i in range(12))  # each answered exactly once


def test_gives_up_after_attempts(server):
    Flaky.fail_first = 10
    be = endpoint_backend(server, attempts=2, backoff_s=0.01, timeout_s=5)
    with pytest.raises(EndpointError, match="after 2 attempts"):
        be([[{"role": "user", "content": "x"}]])


def test_api_key_env_must_be_set(monkeypatch):
    monkeypatch.delenv("AIRFLOW_NET_TEST_KEY", raising=False)
    with pytest.raises(Exception, match="AIRFLOW_NET_TEST_KEY"):
        endpoint_backend("http://127.0.0.1:9/v1", api_key_env="AIRFLOW_NET_TEST_KEY")


@pytest.mark.integration
def test_same_answers_as_in_process_through_airflow_net_serve(tmp_path):
    """Greedy strategies over `airflow-net serve` give what the in-process engine gives, on the tiny bigram GGUF."""
    from airflow_net.generate.strategies import dagcheck_judge, engine_backend, run_strategy
    from airflow_net.serve.engine import Engine
    from tests.support import tiny_gguf
    from tests.test_serve import Server

    if not tiny_gguf.available():
        pytest.skip("vendored gguf-py missing")
    model = tiny_gguf.build(tmp_path / "tiny.gguf")
    msgs = [{"role": "user", "content": tiny_gguf.INSTRUCTION}]
    judge = dagcheck_judge(3)
    with Engine(model, n_parallel=2, n_ctx=1024, n_threads=2) as eng:
        local = run_strategy("repair", msgs, engine_backend(eng, max_tokens=200), judge, rounds=1)
        local_ids = run_strategy("direct", msgs, engine_backend(eng, max_tokens=200, copy_ids=True), judge)
        srv = Server(eng)
        try:
            url = f"http://127.0.0.1:{srv.port}/v1"
            be = endpoint_backend(url, max_tokens=200, concurrency=2, timeout_s=60)
            remote = run_strategy("repair", msgs, be, judge, rounds=1)
            be_ids = endpoint_backend(url, max_tokens=200, concurrency=2, timeout_s=60, copy_ids=True)
            remote_ids = run_strategy("direct", msgs, be_ids, judge)
        finally:
            srv.stop()
    assert remote.code == local.code and remote.valid == local.valid
    assert remote.completion_tokens == local.completion_tokens and remote.rounds == local.rounds
    # with the decoding rules asked for, the server decodes as the in-process engine does with them
    assert remote_ids.code == local_ids.code and remote_ids.completion_tokens == local_ids.completion_tokens


def test_cli_generate_over_endpoint(server, capsys):
    from pathlib import Path

    from airflow_net.cli import main

    Flaky.fail_first = 1
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["generate", "a dag please", "--endpoint", server, "--params", str(params), "--strategy", "repair",
              "--rounds", "1"])
    out, err = capsys.readouterr()
    # the echo server never writes a valid DAG: one answer, one repair round, verdict on stderr, exit 1
    assert exc.value.code == 1 and "# dagcheck: INVALID" in err
    assert "# strategy: repair; candidates: 2; repair rounds: 1;" in err
    assert out.startswith("echo ")
