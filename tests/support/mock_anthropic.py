"""A local mock of the Anthropic Messages and Message Batches endpoints, for the real SDK to talk to.

Binds 127.0.0.1 on a free port, checks the ``Authorization: Bearer`` key, and serves:

- ``POST /v1/messages``                        a Message, or an injected 429/529;
- ``POST /v1/messages/batches``                creates a batch (``in_progress``);
- ``GET  /v1/messages/batches``                lists batches, newest first, with cursors;
- ``GET  /v1/messages/batches/{id}``           ends the batch after ``polls_to_end`` retrievals;
- ``GET  /v1/messages/batches/{id}/results``   JSONL, shuffled (not in request order).

The "model" writes plausible instructions from the DAG in the prompt, as many as the prompt asks for; a
``plan`` makes it misbehave for chosen DAGs (by dag id), attempt by attempt: ``bad_json``, ``wrong_count``,
``repeated``, ``code``, ``errored``, ``canceled``, ``expired``, ``invalid_request``; ``answer`` replaces the
"model" altogether. Tokens are counted as
words and punctuation, the same on every run. Hooks (``on``) let a test act at a named moment, e.g. kill
the client process right after a batch is created and before the client hears of it.
"""

from __future__ import annotations

import json
import random
import re
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def _allowed_params() -> set[str]:
    """The body fields the Messages API accepts, from the installed SDK's own types (like the API, the mock
    refuses the others: the 2026 API has no temperature, for one)."""
    import typing

    from anthropic.types import message_create_params as mcp

    return set(typing.get_type_hints(mcp.MessageCreateParamsNonStreaming)) - {"stream"}


ALLOWED = _allowed_params()


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class MockAnthropic:
    def __init__(self, api_key: str = "sk-ant-mock-key", *, polls_to_end: int = 1, seed: int = 0) -> None:
        self.api_key = api_key
        self.polls_to_end = polls_to_end
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.batches: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # batch ids, oldest first
        self.plan: dict[str, list[str]] = {}  # dag id -> outcome per attempt ("ok" when the list runs out)
        self.attempts: Counter = Counter()  # dag id -> requests seen
        self.faults: dict[str, list[int]] = defaultdict(list)  # route -> HTTP statuses to answer first
        self.on: dict[str, Callable[..., None]] = {}  # hook name -> callable
        # a test's own "model" (request body -> answer text) in place of the instruction writer (the judge's tests)
        self.answer: Callable[[dict[str, Any]], str] | None = None
        self.calls: Counter = Counter()  # route -> requests received
        self.batch_requests = 0  # requests received inside created batches
        self.live_requests = 0  # successful live Messages calls
        self.auth_failures = 0
        self.usage: list[dict[str, int]] = []  # usage of every message answered (live or in a batch)
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> MockAnthropic:
        handler = type("Handler", (_Handler,), {"mock": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True, name="mock-anthropic"
        ).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": self.api_key}

    def hook(self, name: str, **info: Any) -> None:
        fn = self.on.get(name)
        if fn:
            fn(**info)

    # -- the "model" -------------------------------------------------------------------------------
    def outcome(self, body: dict[str, Any]) -> tuple[str, str]:
        text = body["messages"][-1]["content"]
        m = re.search(r'dag_id="([^"]+)"', text) or re.search(r"DAG\(\s*['\"]([^'\"]+)", text)
        dag = m.group(1) if m else "unknown"
        with self.lock:
            i = self.attempts[dag]
            self.attempts[dag] += 1
        steps = self.plan.get(dag, [])
        return dag, (steps[i] if i < len(steps) else "ok")

    def answer_text(self, body: dict[str, Any], dag: str, outcome: str) -> str:
        text = body["messages"][-1]["content"]
        n = int(re.search(r"exactly (\d+)", text).group(1))
        styles = re.findall(r"^\d+\. (\w+):", text, re.M)
        tasks = re.findall(r'task_id="([^"]+)"', text) or ["the steps"]
        sched = re.search(r"schedule=([^,\n]+)", text)
        sched_s = sched.group(1).strip("'\"") if sched else "no schedule"
        items = []
        for i in range(n):
            style = styles[i] if i < len(styles) else "other"
            order = ", then ".join(tasks)
            if style == "terse":
                s = f"Airflow DAG {dag}: run {order}, {sched_s}."
            elif style == "detailed":
                s = (
                    f"Write an Airflow DAG with the id {dag} that runs on the schedule {sched_s} without catchup."
                    f" It has {len(tasks)} tasks: {order}, each one after the previous. Each task runs its job"
                    " script for the logical date; keep the retries and tags as in our other pipelines."
                )
            elif style == "business":
                s = (
                    f"Our team needs the {dag.split('_')[0]} numbers refreshed {sched_s}. Please set up a pipeline"
                    f" ({dag}) that does {order} in that order, so the dashboards are ready every morning."
                )
            else:
                s = f"Variant {i + 1} ({style}): a pipeline {dag} doing {order} on {sched_s}."
            items.append(s)
        if outcome == "wrong_count":
            items = items[:-1] if n > 1 else items * 2
        elif outcome == "repeated" and n > 1:
            items[1] = items[0]
        elif outcome == "code":
            items[0] += f"\n```python\nfrom airflow.sdk import DAG\nwith DAG('{dag}') as dag: ...\n```"
        if outcome == "bad_json":
            return "Sure! Here are the requests: " + "; ".join(items)
        return json.dumps({"instructions": items})

    def message(self, body: dict[str, Any], dag: str, outcome: str) -> dict[str, Any]:
        text = self.answer(body) if self.answer else self.answer_text(body, dag, outcome)
        prompt = body.get("system", "") + "".join(m["content"] for m in body["messages"])
        if "output_config" in body:
            prompt += json.dumps(body["output_config"]) * 4  # the API's format instructions cost input tokens
        usage = {"input_tokens": count_tokens(prompt), "output_tokens": count_tokens(text)}
        with self.lock:
            self.usage.append(usage)
        return {
            "id": f"msg_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": dict(usage),
        }

    def batch_result(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        dag, outcome = self.outcome(body)
        if outcome in ("canceled", "expired"):
            return {"custom_id": custom_id, "result": {"type": outcome}}
        if outcome in ("errored", "invalid_request"):
            etype = "invalid_request_error" if outcome == "invalid_request" else "overloaded_error"
            err = {"type": "error", "error": {"type": etype, "message": f"mock {etype}"}, "request_id": None}
            return {"custom_id": custom_id, "result": {"type": "errored", "error": err}}
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": self.message(body, dag, outcome)}}

    # -- batches -----------------------------------------------------------------------------------
    def batch_json(self, b: dict[str, Any]) -> dict[str, Any]:
        ended = b["status"] == "ended"
        counts = Counter(r["result"]["type"] for r in b["results"]) if ended else Counter()
        return {
            "id": b["id"],
            "type": "message_batch",
            "processing_status": b["status"],
            "request_counts": {
                "processing": 0 if ended else len(b["results"]),
                "succeeded": counts["succeeded"],
                "errored": counts["errored"],
                "canceled": counts["canceled"],
                "expired": counts["expired"],
            },
            "created_at": _iso(b["created_at"]),
            "expires_at": _iso(b["created_at"] + timedelta(hours=24)),
            "ended_at": _iso(b["created_at"] + timedelta(minutes=5)) if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{b['id']}/results" if ended else None,
        }

    def create_batch(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [r["custom_id"] for r in requests]
        for r in requests:
            extra = set(r["params"]) - ALLOWED
            if extra:
                raise ValueError(f"requests.{r['custom_id']}.params: unknown fields {sorted(extra)}")
        if len(set(ids)) != len(ids) or not all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i) for i in ids):
            raise ValueError("custom_id values must be unique and match ^[a-zA-Z0-9_-]{1,64}$")
        b = {
            "id": f"msgbatch_{uuid.uuid4().hex[:24]}",
            "status": "in_progress",
            "polls": 0,
            "created_at": datetime.now(timezone.utc),
            "results": [self.batch_result(r["custom_id"], r["params"]) for r in requests],
        }
        with self.lock:
            self.batches[b["id"]] = b
            self.order.append(b["id"])
            self.batch_requests += len(requests)
        return b


class _Handler(BaseHTTPRequestHandler):
    mock: MockAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, etype: str, message: str) -> None:
        extra = {"retry-after-ms": "5"} if status in (429, 529) else {}
        self._send(status, {"type": "error", "error": {"type": etype, "message": message}}, extra)

    def _route(self) -> tuple[str, str | None]:
        path = self.path.split("?")[0].rstrip("/")
        if path == "/v1/messages":
            return "messages", None
        if path == "/v1/messages/batches":
            return ("create" if self.command == "POST" else "list"), None
        m = re.fullmatch(r"/v1/messages/batches/([\w-]+)(/results)?", path)
        if m:
            return ("results" if m.group(2) else "retrieve"), m.group(1)
        return "unknown", None

    def _pre(self, route: str) -> bool:
        m = self.mock
        with m.lock:
            m.calls[route] += 1
        if self.headers.get("authorization") != f"Bearer {m.api_key}":
            with m.lock:
                m.auth_failures += 1
            self._error(401, "authentication_error", "invalid x-api-key")
            return False
        with m.lock:
            status = m.faults[route].pop(0) if m.faults[route] else None
        if status == 429:
            self._error(429, "rate_limit_error", "mock rate limit")
            return False
        if status == 529:
            self._error(529, "overloaded_error", "mock overloaded")
            return False
        if status:
            self._error(status, "api_error", "mock failure")
            return False
        return True

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_POST(self) -> None:  # noqa: N802
        route, _ = self._route()
        body = self._body()
        if not self._pre(route):
            return
        m = self.mock
        if route == "messages":
            extra = set(body) - ALLOWED
            if extra:
                return self._error(400, "invalid_request_error", f"unknown fields {sorted(extra)}")
            dag, outcome = m.outcome(body)
            if outcome in ("errored", "canceled", "expired"):
                return self._error(500, "api_error", "mock live failure")
            if outcome == "invalid_request":
                return self._error(400, "invalid_request_error", "mock invalid request")
            with m.lock:
                m.live_requests += 1
            return self._send(200, m.message(body, dag, outcome))
        if route == "create":
            try:
                b = m.create_batch(body["requests"])
            except ValueError as exc:
                return self._error(400, "invalid_request_error", str(exc))
            m.hook("batch_created", batch_id=b["id"], n=len(b["results"]))  # before the client hears of it
            return self._send(200, m.batch_json(b))
        self._error(404, "not_found_error", f"no route {self.path}")

    def do_GET(self) -> None:  # noqa: N802
        route, bid = self._route()
        if not self._pre(route):
            return
        m = self.mock
        if route == "list":
            q = dict(p.split("=", 1) for p in self.path.partition("?")[2].split("&") if "=" in p)
            ids = list(reversed(m.order))  # newest first
            if "after_id" in q and q["after_id"] in ids:
                ids = ids[ids.index(q["after_id"]) + 1 :]
            limit = int(q.get("limit", 20))
            page = ids[:limit]
            data = [m.batch_json(m.batches[i]) for i in page]
            return self._send(
                200,
                {"data": data, "has_more": len(ids) > limit, "first_id": page[0] if page else None, "last_id": page[-1] if page else None},
            )
        b = m.batches.get(bid or "")
        if b is None:
            return self._error(404, "not_found_error", f"batch {bid} not found")
        if route == "retrieve":
            with m.lock:
                b["polls"] += 1
                if b["polls"] >= m.polls_to_end:
                    b["status"] = "ended"
            m.hook("batch_retrieved", batch_id=bid, status=b["status"])
            return self._send(200, m.batch_json(b))
        if route == "results":
            if b["status"] != "ended":
                return self._error(400, "invalid_request_error", "batch still processing")
            lines = [json.dumps(r) + "\n" for r in b["results"]]
            m.rng.shuffle(lines)  # the API does not keep request order
            data = [ln.encode() for ln in lines]
            self.send_response(200)
            self.send_header("content-type", "application/binary")
            self.send_header("content-length", str(sum(len(d) for d in data)))
            self.end_headers()
            for i, d in enumerate(data, 1):
                self.wfile.write(d)
                self.wfile.flush()
                m.hook("result_line", batch_id=bid, index=i)
            return None
        self._error(404, "not_found_error", f"no route {self.path}")
