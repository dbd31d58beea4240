"""The LLM judge, offline: a mock Message Batches API (the instruct tests' mock, through the real SDK) and a mock
OpenAI-compatible server on 127.0.0.1. Each mock "judge" reads the grade planted in the DAG's code
(``# grade: N``), so every score and failure is known in advance."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_net.data import anthropic_provider as prov
from airflow_net.evaluate import judge as jd
from airflow_net.evaluate.stats import rank_agreement
from airflow_net.params import EvaluateParams
from airflow_net.report import judge_section
from airflow_net.utils import UserError
from tests.support.dags import dag_source
from tests.support.mock_anthropic import MockAnthropic

# Planted grades per request (base, fine-tuned); "prose", "7" and "extra" are answers the judge must refuse.
# Request 2 gets the same code from both models: one prompt, asked once (11 distinct prompts for 12 answers).
BASE = ["2", "1", "3", "prose", "2", "1"]
FINE = ["4", "5", "3", "5", "7", "extra"]
F1 = {"base": [0.3, 0.1, 0.5, 0.2, 0.4, 0.0], "finetuned": [0.6, 0.9, 0.5, 0.8, 0.7, 0.9]}


def judge_answer(user: str) -> str:
    """The mock judge: the planted grade as the strict JSON answer, or a planted kind of bad answer."""
    g = re.search(r"# grade: (\w+)", user).group(1)
    if g == "prose":
        return "I would give this DAG a 4: it does most of what was asked."
    if g == "extra":
        return json.dumps({"score": 4, "reason": "fine", "confidence": 0.9})
    return json.dumps({"score": int(g), "reason": f"planted grade {g}\n(second line)"})


def data(grades=(BASE, FINE)):
    generated, per_model = {}, {}
    for which, gs in zip(jd.MODELS, grades, strict=True):
        generated[which] = [{"uid": f"u{i}", "variant": "terse", "instruction": f"Write DAG number {i}, please."}
                            for i in range(len(gs))]
        per_model[which] = [{"uid": f"u{i}", "variant": "terse", "structural_f1": F1[which][i],
                             "code": f"# grade: {g}\n{dag_source(i)}"} for i, g in enumerate(gs)]
    return generated, per_model


def params(tmp_path, **kw):
    base = {"judge": "anthropic", "judge_poll_seconds": 0.001, "judge_cache": str(tmp_path / "cache"),
            "bootstrap_resamples": 200}
    return EvaluateParams(**{**base, **kw})


def check_scores(metrics, results):
    assert {i: r.get("score", r.get("failure")) for i, r in results["base"].items()} == \
        {0: 2, 1: 1, 2: 3, 3: "bad_json", 4: 2, 5: 1}
    assert {i: r.get("score", r.get("failure")) for i, r in results["finetuned"].items()} == \
        {0: 4, 1: 5, 2: 3, 3: 5, 4: "bad_score", 5: "bad_fields"}
    assert results["base"][0]["reason"] == "planted grade 2 (second line)"  # one line
    b, f = metrics["base"], metrics["finetuned"]
    assert (b["scored"], b["failures"], b["failure_reasons"]) == (5, 1, {"bad_json": 1})
    assert (f["scored"], f["failures"], f["failure_reasons"]) == (4, 2, {"bad_fields": 1, "bad_score": 1})
    assert b["mean_score"] == pytest.approx(9 / 5) and f["mean_score"] == pytest.approx(17 / 4)
    assert b["mean_score_lo"] <= b["mean_score"] <= b["mean_score_hi"]
    assert b["score_counts"] == {"1": 2, "2": 2, "3": 1, "4": 0, "5": 0}
    assert b["rank_agreement_f1"] == rank_agreement([2, 1, 3, 2, 1], [0.3, 0.1, 0.5, 0.4, 0.0])
    # paired over the requests scored for both models: 0, 1, 2
    assert metrics["test"]["n"] == 3 and metrics["test"]["diff"] == pytest.approx((2 + 4 + 0) / 3, abs=1e-4)


# --- parsing and rank agreement --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "stop", "want"), [
    ('{"score": 4, "reason": "misses the retries"}', None, {"score": 4, "reason": "misses the retries"}),
    ('```json\n{"score": 1, "reason": "not a DAG"}\n```', None, {"score": 1, "reason": "not a DAG"}),
    ('{"score": 3, "reason": "two\\n lines"}', None, {"score": 3, "reason": "two lines"}),
    ("Score: 4. Reason: good.", None, "bad_json"),
    ('Here it is: {"score": 4, "reason": "x"}', None, "bad_json"),  # not guessed out of prose
    ('{"score": 4}', None, "bad_fields"),
    ('{"score": 4, "reason": "x", "notes": "y"}', None, "bad_fields"),
    ('["score", 4]', None, "bad_fields"),
    ('{"score": 6, "reason": "x"}', None, "bad_score"),
    ('{"score": 0, "reason": "x"}', None, "bad_score"),
    ('{"score": 4.5, "reason": "x"}', None, "bad_score"),
    ('{"score": "4", "reason": "x"}', None, "bad_score"),
    ('{"score": true, "reason": "x"}', None, "bad_score"),
    ('{"score": 2, "reason": "  "}', None, "no_reason"),
    ('{"score": 2, "reason": null}', None, "no_reason"),
    ('{"score": 2, "rea', "max_tokens", "truncated"),
    ('{"score": 2, "rea', "length", "truncated"),
    ('{"score": 5, "reason": "x"}', "refusal", "refusal"),
])
def test_parse_verdict_is_strict(text, stop, want):
    answer, why = jd.parse_verdict(text, stop)
    assert (answer if isinstance(want, dict) else why) == want
    assert (answer is None) == (why is not None)


def test_rank_agreement_known_values():
    assert rank_agreement([1, 2, 3, 4], [0.1, 0.4, 0.5, 0.9]) == 1.0
    assert rank_agreement([1, 2, 3, 4], [9, 7, 5, 1]) == -1.0
    # ties take their average rank: x ranks 1, 2.5, 2.5, 4; y ranks 1, 3, 2, 4 -> 4.5 / sqrt(4.5 * 5)
    assert rank_agreement([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5, abs=1e-4)
    assert rank_agreement([3, 3, 3], [0.1, 0.2, 0.3]) is None  # a constant judge ranks nothing
    assert rank_agreement([1, 2], [1, 2]) is None
    with pytest.raises(ValueError, match="paired"):
        rank_agreement([1, 2, 3], [1, 2])


def test_rows_without_the_request_fail_with_one_line(tmp_path):
    generated, per_model = data()
    del generated["finetuned"][2]["instruction"]
    with pytest.raises(UserError, match=r"finetuned answer 2 \(u2\) has no 'instruction'"):
        jd.run_judge(generated, per_model, params(tmp_path))


def test_prompt_and_key():
    system, user = jd.messages("Daily sales DAG.", "print(1)\n")
    assert "<request>\nDaily sales DAG.\n</request>" in user and "<dag>\nprint(1)\n</dag>" in user
    assert '{"score": <an integer from 1 to 5>' in user and "instruction" in system
    k = jd.request_key("m", system, user, 200)
    assert len(k) == 64 and re.fullmatch(r"[0-9a-f]{64}", k)  # a valid batch custom_id
    assert k != jd.request_key("m2", system, user, 200) and k != jd.request_key("m", system, user + " ", 200)
    assert k != jd.request_key("m", system, user, 100)


# --- anthropic: Message Batches with the instruct stage's ledger -----------------------------------------

@pytest.fixture
def mock(monkeypatch):
    with MockAnthropic(polls_to_end=2) as m:
        m.answer = lambda body: judge_answer(body["messages"][-1]["content"])
        for k, v in m.env().items():
            monkeypatch.setenv(k, v)
        yield m


def expected_usd(usage, e):
    return sum(u["input_tokens"] * e.judge_price_input_per_mtok + u["output_tokens"] * e.judge_price_output_per_mtok
               for u in usage) / 1e6 * 0.5


def test_anthropic_scores_failures_and_cost(mock, tmp_path):
    e = params(tmp_path)
    metrics, results, ex = jd.run_judge(*data(), e)
    check_scores(metrics, results)
    assert mock.calls["create"] == 1 and mock.batch_requests == 11 and mock.live_requests == 0
    run = metrics["run"]
    assert run["requests_this_run"] == 11 and run["invalid_answers"] == 3
    assert run["usd"] == pytest.approx(expected_usd(mock.usage, e), abs=1e-6) and run["usd"] > 0
    assert run["input_tokens"] == sum(u["input_tokens"] for u in mock.usage)
    # the examples: the lowest- and highest-scored fine-tuned answers, with their reasons
    assert [(x["uid"], x["score"]) for x in ex["finetuned"]] == [("u2", 3), ("u1", 5)]


def test_anthropic_rerun_pays_nothing_needs_no_key_and_keeps_failures(mock, tmp_path, monkeypatch):
    e = params(tmp_path)
    m1, r1, _ = jd.run_judge(*data(), e)
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    m2, r2, _ = jd.run_judge(*data(), e)
    assert r2 == r1 and mock.batch_requests == 11  # the invalid answers too: final, not asked (or paid) again
    assert m2["run"]["requests_this_run"] == 0 and m2["run"]["requests_reused"] == 8
    assert m2["run"]["usd"] == m1["run"]["usd"]
    # a sample of 3 is a subset of what was judged: still nothing asked
    m3, r3, _ = jd.run_judge(*data(), params(tmp_path, judge_sample=3))
    assert m3["base"]["n"] == 3 and set(r3["base"]) == set(r3["finetuned"]) and m3["run"]["requests_this_run"] == 0


class Killed(BaseException):
    """Stands in for SIGKILL: nothing catches it."""


@pytest.mark.parametrize(("point", "nth"), [("after_create", 1), ("poll", 1), ("result", 5)])
def test_anthropic_resumes_after_a_kill_without_paying_twice(mock, tmp_path, monkeypatch, point, nth):
    seen = Counter()

    def checkpoint(name):
        seen[name] += 1
        if name == point and seen[name] == nth:
            raise Killed(name)

    monkeypatch.setattr(prov, "_checkpoint", checkpoint)
    e = params(tmp_path)
    with pytest.raises(Killed):
        jd.run_judge(*data(), e)
    assert mock.batch_requests == 11
    monkeypatch.setattr(prov, "_checkpoint", lambda name: None)
    metrics, results, _ = jd.run_judge(*data(), e)
    check_scores(metrics, results)
    assert mock.calls["create"] == 1 and mock.batch_requests == 11, "the batch was submitted twice"
    assert metrics["run"]["requests_this_run"] == 0
    assert metrics["run"]["usd"] == pytest.approx(expected_usd(mock.usage, e), abs=1e-6)  # nothing counted twice


def test_anthropic_refuses_to_start_over_budget(mock, tmp_path):
    with pytest.raises(UserError, match=r"evaluate judge: 11 requests estimated at up to \$0\.0\d.*"
                                        r"exceed evaluate.judge_max_cost_usd=\$0\.00; nothing submitted"):
        jd.run_judge(*data(), params(tmp_path, judge_max_cost_usd=0.001))
    assert mock.calls["create"] == 0 and mock.calls["messages"] == 0
    metrics, _, _ = jd.run_judge(*data(), params(tmp_path, judge_max_cost_usd=1.0))
    assert 0 < metrics["run"]["usd"] <= 1.0


def test_anthropic_missing_key_names_the_switch(mock, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(UserError, match="evaluate.judge is 'anthropic' but ANTHROPIC_API_KEY is not set.*"
                                        "set evaluate.judge: none"):
        jd.run_judge(*data(), params(tmp_path))


# --- openai: any OpenAI-compatible endpoint, cached ------------------------------------------------------

class Judge(BaseHTTPRequestHandler):
    served: list[str] = []  # user messages answered
    posts = 0
    lock = threading.Lock()
    fail_from: int | None = None  # answer HTTP 400 from this request on (a server that breaks mid-run)
    key: str | None = None

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            Judge.posts += 1
            n = Judge.posts
        if (self.key and self.headers.get("Authorization") != f"Bearer {self.key}") or \
                (self.fail_from is not None and n >= self.fail_from):
            self.send_response(401 if self.key else 400)
            self.end_headers()
            return
        user = body["messages"][-1]["content"]
        assert body["messages"][0]["role"] == "system" and body["temperature"] == 0.0
        with self.lock:
            Judge.served.append(user)
        out = json.dumps({"choices": [{"message": {"content": judge_answer(user)}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 9}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    Judge.served, Judge.posts, Judge.fail_from, Judge.key = [], 0, None, None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def oparams(tmp_path, url, **kw):
    return params(tmp_path, **{"judge": "openai", "judge_endpoint": url, "judge_model": "local-judge", **kw})


def test_openai_scores_and_a_rerun_asks_nothing(server, tmp_path):
    e = oparams(tmp_path, server, judge_concurrency=3)
    metrics, results, _ = jd.run_judge(*data(), e)
    check_scores(metrics, results)
    assert Judge.posts == 11 and len(set(Judge.served)) == 11
    assert metrics["run"]["requests_this_run"] == 11 and "usd" not in metrics["run"]
    m2, r2, _ = jd.run_judge(*data(), e)
    assert r2 == results and Judge.posts == 11 and m2["run"]["requests_this_run"] == 0
    # another judge model is another cache key: asked again
    jd.run_judge(*data(), oparams(tmp_path, server, judge_model="another-judge"))
    assert Judge.posts == 22


def test_openai_resumes_after_the_server_breaks_mid_run(server, tmp_path):
    e = oparams(tmp_path, server, judge_concurrency=1)
    Judge.fail_from = 6  # five answers, then a permanent error (the run stops: a crash)
    with pytest.raises(UserError, match="HTTP 400"):
        jd.run_judge(*data(), e)
    assert len(Judge.served) == 5
    Judge.fail_from = None
    metrics, results, _ = jd.run_judge(*data(), e)
    check_scores(metrics, results)
    assert len(Judge.served) == 11 and len(set(Judge.served)) == 11  # each prompt answered exactly once
    assert metrics["run"]["requests_this_run"] == 6 and metrics["run"]["requests_reused"] == 5


def test_openai_key_from_the_named_variable_and_written_nowhere(server, tmp_path, monkeypatch):
    Judge.key = "sk-local-PLANTED-0123456789"
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", Judge.key)
    metrics, _, _ = jd.run_judge(*data(), oparams(tmp_path, server, judge_api_key_env="JUDGE_KEY_FOR_TEST"))
    assert metrics["finetuned"]["scored"] == 4
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and Judge.key.encode() in p.read_bytes()]
    assert Judge.key not in json.dumps(metrics)


def test_evaluate_with_the_judge_fills_metrics_csv_examples_and_report(server, tmp_path):
    from airflow_net.evaluate.summary import evaluate

    generated, per_model = data()
    for which in jd.MODELS:  # the generate stage's rows: the answer text, the request and its spec
        for g, r in zip(generated[which], per_model[which], strict=True):
            g.update(text=f"```python\n{r['code']}```", spec=None, finish_reason="stop", completion_tokens=50)
    judge = partial(jd.run_judge, e=oparams(tmp_path, server, judge_sample=4))
    metrics, csv_rows, ex = evaluate(generated, 3, 200, 0, judge=judge)
    j = metrics["judge"]
    assert j["provider"] == "openai" and j["base"]["n"] == 4 and j["prompt_version"] == jd.PROMPT_VERSION
    judged = [r for r in csv_rows if r["judge_reason"] is not None]
    assert len(judged) == 8 and all(set(r) >= {"judge_score", "judge_reason"} for r in csv_rows)
    assert {r["judge_reason"] for r in judged if r["judge_score"] is None} <= {"bad_json", "bad_score", "bad_fields"}
    assert len(ex["judge"]["finetuned"]) == 2
    text = "\n".join(judge_section(j, ex["judge"]))
    assert "## LLM judge: instruction following" in text and "local-judge (openai)" in text
    assert f"{j['finetuned']['mean_score']:.3f}" in text and "Spearman" in text
    assert "Failures by reason: base: bad_json 1" in text
    assert text.count("- fine-tuned, score") == 2 and ex["judge"]["finetuned"][0]["reason"] in text
    # no judge: no judge key, no judge columns
    metrics2, csv2, ex2 = evaluate(generated, 3, 200, 0)
    assert "judge" not in metrics2 and "judge_score" not in csv2[0] and "judge" not in ex2
