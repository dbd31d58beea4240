"""The anthropic provider against a local mock of the Messages and Message Batches API, through the real SDK."""

import json
import re
from collections import Counter

import pytest

from airflow_net.data import anthropic_provider as prov
from airflow_net.data.anthropic_ledger import LEDGER_FILE, Ledger, State
from airflow_net.data.corpus import dag_uid
from airflow_net.params import InstructParams
from airflow_net.utils import UserError
from tests.support.dags import dag_source
from tests.support.mock_anthropic import MockAnthropic


def records(n, start=0):
    return [{"uid": dag_uid(s), "source": s, "airflow": 3, "origin": "t"} for s in (dag_source(i) for i in range(start, start + n))]


def dag_id(rec):
    return re.search(r'dag_id="([^"]+)"', rec["source"]).group(1)


def params(**kw):
    base = {"provider": "anthropic", "poll_seconds": 0.001, "batch_size": 4}
    return InstructParams(**{**base, **kw})


@pytest.fixture
def mock(monkeypatch):
    with MockAnthropic(polls_to_end=2) as m:
        for k, v in m.env().items():
            monkeypatch.setenv(k, v)
        yield m


def ledger_events(out):
    return [json.loads(line) for line in (out / "ledger" / LEDGER_FILE).read_text().splitlines()]


def expected_usd(usage, p, batch=True):
    f = p.batch_discount if batch else 1.0
    return sum(u["input_tokens"] * p.price_input_per_mtok + u["output_tokens"] * p.price_output_per_mtok for u in usage) / 1e6 * f


def test_batches_give_pairs_and_exact_cost(mock, tmp_path):
    recs, p = records(6), params()
    pairs, m = prov.anthropic_pairs(recs, p, 0, tmp_path)
    assert len(pairs) == 18 and Counter(x["variant"] for x in pairs) == {"terse": 6, "detailed": 6, "business": 6}
    # results come back shuffled: each pair still belongs to its own DAG
    by_uid = {r["uid"]: r for r in recs}
    assert all(dag_id(by_uid[x["uid"]]) in x["instruction"] for x in pairs)
    assert mock.calls["create"] == 2 and mock.batch_requests == 6 and mock.live_requests == 0
    assert m["requests"] == 6 and m["results"] == {"succeeded": 6} and m["batches_this_run"] == 2
    assert m["input_tokens"] == sum(u["input_tokens"] for u in mock.usage)
    assert m["output_tokens"] == sum(u["output_tokens"] for u in mock.usage)
    assert m["usd"] == pytest.approx(expected_usd(mock.usage, p), abs=1e-6)
    live_one = sum(3 * u["input_tokens"] + 5 * u["output_tokens"] for u in mock.usage) / 1e6
    assert m["usd_if_live_one_per_instruction"] == pytest.approx(live_one, abs=1e-6)
    assert m["cost_ratio_vs_live_one_per_instruction"] == pytest.approx(m["usd"] / live_one, abs=1e-3)
    assert m["cost_ratio_vs_live_one_per_instruction"] < 0.4
    assert m["usd_per_1k_instructions"] == pytest.approx(1000 * m["usd"] / 18, abs=1e-5)


def test_rerun_reuses_the_ledger_without_the_api_or_a_key(mock, tmp_path, monkeypatch):
    recs = records(5)
    pairs1, _ = prov.anthropic_pairs(recs, params(), 0, tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    pairs2, m2 = prov.anthropic_pairs(recs, params(), 0, tmp_path)
    assert pairs2 == pairs1 and m2["requests_this_run"] == 0 and m2["requests_reused"] == 5
    # one more DAG: only it is asked for
    monkeypatch.setenv("ANTHROPIC_API_KEY", mock.api_key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", mock.url)
    pairs3, m3 = prov.anthropic_pairs(records(6), params(), 0, tmp_path)
    assert m3["requests_this_run"] == 1 and mock.batch_requests == 6 and len(pairs3) == 18
    # a new generation param is a new key: asked again
    _, m4 = prov.anthropic_pairs(recs, params(max_tokens=512), 0, tmp_path)
    assert m4["requests_this_run"] == 5 and m4["requests_reused"] == 0


def test_every_result_type_retried_and_reported(mock, tmp_path, monkeypatch):
    recs = records(7)
    a, b, c, d, e, f, _ = (dag_id(r) for r in recs)
    mock.plan = {
        a: ["errored"],
        b: ["canceled"],
        c: ["expired"],
        d: ["bad_json", "wrong_count"],
        e: ["repeated", "code", "bad_json"],  # still invalid after max_retries=2
        f: ["invalid_request"],  # permanent: not retried
    }
    pairs, m = prov.anthropic_pairs(recs, params(max_retries=2), 0, tmp_path)
    assert mock.attempts == {a: 2, b: 2, c: 2, d: 3, e: 3, f: 1, dag_id(recs[6]): 1}
    assert m["results"] == {"succeeded": 10, "errored": 2, "canceled": 1, "expired": 1}
    assert m["invalid_reasons"] == {"bad_json": 2, "wrong_count": 1, "repeated": 1, "code": 1}
    assert m["failed_dags"] == 2 and m["failed_reasons"] == {"bad_json": 1, "invalid_request_error": 1}
    assert len(pairs) == 15 and {x["uid"] for x in pairs} == {r["uid"] for r in recs} - {recs[4]["uid"], recs[5]["uid"]}
    # invalid answers were paid for: they are in the cost, errored/canceled/expired are not
    assert m["usd"] == pytest.approx(expected_usd(mock.usage, params()), abs=1e-6)
    # a rerun resubmits the invalid one (bounded again) but not the permanent error
    pairs2, m2 = prov.anthropic_pairs(recs, params(max_retries=2), 0, tmp_path)
    assert mock.attempts[e] == 4 and mock.attempts[f] == 1 and m2["requests_this_run"] == 1
    assert m2["failed_dags"] == 1 and len(pairs2) == 18
    # only the permanent failure is left: nothing to ask, so no key is needed
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    pairs3, m3 = prov.anthropic_pairs(recs, params(max_retries=2), 0, tmp_path)
    assert pairs3 == pairs2 and m3["requests_this_run"] == 0 and m3["failed_reasons"] == {"invalid_request_error": 1}


def test_live_calls_with_429_and_529(mock, tmp_path):
    recs, p = records(5), params(batch=False, concurrency=2, api_max_retries=2)
    mock.faults["messages"] = [429, 529, 429]  # the SDK retries these (retry-after-ms honoured)
    pairs, m = prov.anthropic_pairs(recs, p, 0, tmp_path)
    assert len(pairs) == 15 and mock.calls["messages"] == 8 and mock.live_requests == 5
    assert m["mode"] == "live" and m["results"] == {"succeeded": 5}
    assert m["usd"] == pytest.approx(expected_usd(mock.usage, p, batch=False), abs=1e-6)
    assert m["cost_ratio_vs_live_one_per_instruction"] > 0.4  # live at 3 per request: no batch discount


def test_live_rate_limit_beyond_sdk_retries_is_resubmitted(mock, tmp_path):
    recs = records(3)
    mock.faults["messages"] = [429, 429, 429]  # one request fails all 3 SDK attempts
    pairs, m = prov.anthropic_pairs(recs, params(batch=False, concurrency=1, api_max_retries=2), 0, tmp_path)
    assert len(pairs) == 9 and m["results"] == {"succeeded": 3, "errored": 1} and m["requests_this_run"] == 4


def test_batch_create_retries_429_529_without_duplicates(mock, tmp_path):
    mock.faults["create"] = [429, 529]
    pairs, m = prov.anthropic_pairs(records(3), params(), 0, tmp_path)
    assert mock.calls["create"] == 3 and len(mock.batches) == 1 and mock.batch_requests == 3 and len(pairs) == 9


def test_batch_created_but_response_lost_is_adopted(mock, tmp_path):
    def drop_response(**_):
        mock.on.pop("batch_created")
        raise ConnectionAbortedError("the response never reaches the client")

    mock.on["batch_created"] = drop_response
    pairs, m = prov.anthropic_pairs(records(3), params(), 0, tmp_path)
    assert mock.calls["create"] == 1 and mock.batch_requests == 3 and len(pairs) == 9
    assert any(ev.get("adopted") for ev in ledger_events(tmp_path) if ev["ev"] == "submitted")


class Killed(BaseException):
    """Stands in for SIGKILL: nothing catches it and no code runs after it in the provider."""


@pytest.mark.parametrize(
    ("point", "nth"),
    [("before_create", 2), ("after_create", 1), ("after_submitted", 2), ("poll", 1), ("result", 3)],
)
def test_kill_at_each_phase_resumes_without_duplicate_submission(mock, tmp_path, monkeypatch, point, nth):
    recs = records(6)  # two batches of 4 and 2
    seen = Counter()

    def checkpoint(name):
        seen[name] += 1
        if name == point and seen[name] == nth:
            raise Killed(name)

    monkeypatch.setattr(prov, "_checkpoint", checkpoint)
    with pytest.raises(Killed):
        prov.anthropic_pairs(recs, params(), 0, tmp_path)
    created_first = mock.batch_requests
    if point == "result":  # a torn line, as a kill in the middle of a write leaves it
        with (tmp_path / "ledger" / LEDGER_FILE).open("a") as f:
            f.write('{"ev": "result", "key": "ab')
    monkeypatch.setattr(prov, "_checkpoint", lambda name: None)
    pairs, m = prov.anthropic_pairs(recs, params(), 0, tmp_path)
    assert len(pairs) == 18
    assert mock.batch_requests == 6, f"requests submitted twice after a kill at {point}"
    assert m["requests_this_run"] == 6 - created_first
    assert m["requests"] == 6 and m["results"] == {"succeeded": 6}
    assert m["usd"] == pytest.approx(expected_usd(mock.usage, params()), abs=1e-6)  # nothing counted twice


def test_budget_guard_refuses_and_estimate_is_an_upper_bound(mock, tmp_path):
    recs = records(6)
    with pytest.raises(UserError, match=r"estimated at up to \$(\d+\.\d+).*max_cost_usd=\$0.00") as err:
        prov.anthropic_pairs(recs, params(max_cost_usd=0.001), 0, tmp_path)
    assert mock.calls["create"] == 0 and mock.calls["messages"] == 0
    assert not [ev for ev in ledger_events(tmp_path) if ev["ev"] == "intent"]
    estimate = float(re.search(r"up to \$(\d+\.\d+)", str(err.value)).group(1))
    _, m = prov.anthropic_pairs(recs, params(max_cost_usd=5.0), 0, tmp_path)
    assert 0 < m["usd"] <= estimate


def test_missing_or_wrong_key(mock, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(UserError, match="ANTHROPIC_API_KEY is not set"):
        prov.anthropic_pairs(records(2), params(), 0, tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-key-1234")
    with pytest.raises(UserError, match="rejected ANTHROPIC_API_KEY") as err:
        prov.anthropic_pairs(records(2), params(), 0, tmp_path)
    assert "sk-ant-wrong" not in str(err.value) and mock.auth_failures == 1 and mock.batch_requests == 0


def test_ledger_lock_and_torn_tail(tmp_path):
    with Ledger(tmp_path) as led:
        led.append({"ev": "intent", "sub": "s1", "mode": "batch", "keys": ["k1"]}, sync=True)
        with pytest.raises(UserError, match="another run holds"), Ledger(tmp_path):
            pass
    (tmp_path / LEDGER_FILE).open("a").write('{"ev": "submitted", "sub": "s1", "batch')
    with Ledger(tmp_path) as led:
        led.append({"ev": "result", "key": "k1", "sub": "s1", "type": "succeeded", "instructions": ["x"], "usd": 0.5})
        led.append({"ev": "result", "key": "k1", "sub": "s1", "type": "succeeded", "instructions": ["x"], "usd": 0.5})
        st = State.replay(led.events())
    assert len(st.results["k1"]) == 1 and st.usd() == 0.5 and st.subs["s1"].batch_id is None
