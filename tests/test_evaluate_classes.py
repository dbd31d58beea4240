"""Evaluation that tells the whole story: error classes, intervals, paired tests, breakdowns."""

from __future__ import annotations

import random

import numpy as np
import pytest

from airflow_net.data.factory import random_spec, render
from airflow_net.evaluate.breakdown import breakdown, code_facts, request_facts
from airflow_net.evaluate.errors import ERROR_CLASSES, classify
from airflow_net.evaluate.metrics import judge
from airflow_net.evaluate.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap
from airflow_net.evaluate.summary import evaluate


@pytest.fixture(scope="module")
def clean() -> tuple[str, dict]:
    """A factory DAG that asks for owner and retries, rendered by the factory: a clean answer."""
    rng = random.Random(3)
    for _ in range(200):
        sp = random_spec(rng, airflow=3, max_tasks=4)
        if sp.owner and sp.retries is not None:
            return render(sp), sp.to_dict()
    raise AssertionError("the factory never asked for owner and retries")


def _classes(code: str, spec: dict, finish: str = "stop") -> dict[str, str]:
    j = judge(code, spec, airflow=3)
    return classify(code, spec, j.error_codes + j.warning_codes, finish)


def test_clean_dag_falls_in_no_error_class(clean) -> None:
    code, spec = clean
    assert _classes(code, spec) == {}


@pytest.mark.parametrize("cls, edit", [
    ("syntax_error", lambda c: c + "\ndef broken(:\n"),
    ("undefined_name", lambda c: c + "\nnot_defined_anywhere()\n"),
    ("non_public_import", lambda c: "from airflow.utils.tests import something\nimport unittest\n" + c),
    ("deprecated_syntax", lambda c: "from airflow.operators.bash_operator import BashOperator as _Old\n" + c),
    ("hardcoded_secret", lambda c: c + '\npassword = "hunter2-correct-horse"\nAWS = "AKIAIOSFODNN7EXAMPLE"\n'),
    ("missing_setup", lambda c: c.replace("retries", "retriez").replace("owner", "ownerz")),
])
def test_each_error_class_fires_on_a_hand_made_example(clean, cls, edit) -> None:
    code, spec = clean
    got = _classes(edit(code), spec)
    assert cls in got and got[cls], got


def test_truncated_class_comes_from_the_finish_reason(clean) -> None:
    code, spec = clean
    assert set(_classes(code, spec, finish="length")) == {"truncated"}
    assert set(ERROR_CLASSES) >= {"syntax_error", "truncated", "missing_setup", "hardcoded_secret"}


def test_bootstrap_interval_covers_the_true_rate_about_95_percent() -> None:
    rng = np.random.default_rng(7)
    p, n, sims = 0.3, 80, 300
    hits = 0
    for s in range(sims):
        lo, hi = bootstrap_ci(rng.random(n) < p, resamples=1000, seed=s)
        hits += lo <= p <= hi
    # percentile bootstrap runs slightly narrow at n=80; 300 simulations give +-2.5 points of noise
    assert 0.89 <= hits / sims <= 0.99, hits / sims


def test_bootstrap_is_seeded_and_rejects_empty() -> None:
    x = [1, 0, 1, 1, 0]
    assert bootstrap_ci(x, 500, 1) == bootstrap_ci(x, 500, 1)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([], 500, 1)


def test_mcnemar_counts_discordant_pairs_and_matches_the_exact_binomial() -> None:
    a = [False] * 10 + [True] * 5
    b = [True] * 10 + [True] * 5
    t = mcnemar_exact(a, b)
    assert (t["b_only"], t["a_only"]) == (10, 0)
    assert t["p_value"] == pytest.approx(2 * 0.5**10, rel=1e-3)
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0


def test_paired_bootstrap_separates_a_real_gain_from_none() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(60)
    assert paired_bootstrap(a, a + 0.2, 1000, 0)["p_value"] == 0.001  # floored at 1/resamples, never 0
    same = paired_bootstrap(a, a, 1000, 0)
    assert same["diff"] == 0 and same["p_value"] == 1.0


def test_breakdowns_group_by_request_and_code_facts(clean) -> None:
    code, spec = clean
    f = request_facts(spec)
    assert set(f) == {"tasks", "taskgroups", "xcom", "sensors", "style", "airflow"} and f["airflow"] == 3
    c = code_facts(code)
    assert c["lines"] in {"0-29", "30-59", "60-up"} and c["cyclomatic"] is not None
    assert code_facts("def (:\n")["cyclomatic"] is None
    rows = [{"k": "a", "valid_rate": 1.0, "structural_f1": 0.5, "parse_rate": 1.0},
            {"k": "a", "valid_rate": 0.0, "structural_f1": 0.5, "parse_rate": 1.0},
            {"k": None, "valid_rate": 0.0, "structural_f1": 0.0, "parse_rate": 0.0}]
    assert breakdown(rows, lambda r: r["k"]) == {"a": {"n": 2, "valid_rate": 0.5, "structural_f1": 0.5,
                                                       "parse_rate": 1.0}}


def test_evaluate_end_to_end_on_hand_made_answers(clean) -> None:
    code, spec = clean
    good = {"uid": "u1", "variant": "terse", "text": f"```python\n{code}```", "spec": spec,
            "completion_tokens": 50, "seconds": 1.0, "finish_reason": "stop"}
    bad = {**good, "uid": "u2", "variant": "chatty", "text": "```python\n" + code[: len(code) // 2],
           "finish_reason": "length"}
    m, rows, ex = evaluate({"base": [good, bad], "finetuned": [good, good | {"uid": "u2", "variant": "chatty"}]},
                           3, 200, 0, sft_train=[{"messages": [{"role": "assistant", "content": "```python\nx = 1\n```"}]}])
    b, f = m["base"], m["finetuned"]
    assert b["valid_rate"] == 0.5 and f["valid_rate"] == 1.0 and m["gain"]["valid_rate"] == 0.5
    assert b["valid_rate_lo"] <= b["valid_rate"] <= b["valid_rate_hi"]
    assert b["error_classes"]["truncated"] == 0.5 and f["error_classes"]["truncated"] == 0.0
    assert set(b["by_variant"]) == {"terse", "chatty"} and b["by_variant"]["chatty"]["valid_rate"] == 0.0
    assert ex["base"]["truncated"]["uid"] == "u2" and "finetuned" in ex and ex["finetuned"] == {}
    assert m["tests"]["valid_rate"]["significant"] is False  # one discordant pair proves nothing
    assert m["training"] == {"n": 1, "syntax_error_rate": 0.0}
    assert len(rows) == 4 and rows[1]["error_classes"].split() == sorted(rows[1]["error_classes"].split())
    with pytest.raises(ValueError, match="same requests"):
        evaluate({"base": [good, bad], "finetuned": [bad, good]}, 3, 200, 0)


def test_report_shows_intervals_tests_classes_and_breakdowns(clean, tmp_path) -> None:
    import json

    from airflow_net.report import write_report

    code, spec = clean
    good = {"uid": "u1", "variant": "terse", "text": code, "spec": spec, "finish_reason": "stop"}
    bad = {**good, "uid": "u2", "text": "def broken(:\n"}
    m, _, ex = evaluate({"base": [good, bad], "finetuned": [good, good | {"uid": "u2"}]}, 3, 200, 0)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "eval.json").write_text(json.dumps(m))
    (tmp_path / "examples.json").write_text(json.dumps(ex))
    text = write_report(tmp_path / "metrics", tmp_path / "plots", tmp_path / "out", tmp_path).read_text()
    assert "## What changed" in text and "0.500 [" in text
    assert "significant" in text and "| significant |" not in text  # n=2: nothing is significant
    assert "base, syntax_error (`u2`, terse request)" in text and "def broken(:" in text
    assert "Real Airflow on a sample: off" in text
    assert "| fine-tuned + autofix [95% CI] |" in text and "`finetuned_autofix`" in text
    assert "**requested tasks**" in text and (tmp_path / "out" / "complexity.png").stat().st_size > 0


def test_airflow_sample_off_is_null_and_missing_env_is_a_clear_error(clean, tmp_path, monkeypatch) -> None:
    from airflow_net.evaluate.airflow_sample import airflow_sample, sample_indices

    rows = {"base": [{"uid": "u", "code": clean[0], "valid": True}]}
    assert airflow_sample(rows, 0, 3, 0, 200) is None
    assert sample_indices(10, 4, 0) == sample_indices(10, 4, 0) and len(set(sample_indices(10, 4, 0))) == 4
    assert sample_indices(3, 5, 0) == [0, 1, 2]
    monkeypatch.setenv("DAGCHECK_AIRFLOW_ENV", str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match="no Airflow 3 environment"):
        airflow_sample(rows, 1, 3, 0, 200)


@pytest.mark.integration
def test_airflow_sample_loads_with_real_airflow_and_agrees_with_static(clean) -> None:
    from airflow_net.dagcheck.airflow_tier import env_available
    from airflow_net.evaluate.airflow_sample import airflow_sample

    if not env_available(3):
        pytest.skip("no .airflow-env (make airflow-env)")
    code, spec = clean
    rows = [{"uid": "good", "code": code, "valid": True}, {"uid": "bad", "code": code + "\nboom(\n", "valid": False}]
    out = airflow_sample({"base": rows, "finetuned": rows[:1] * 2}, 2, 3, 0, 200)
    assert out["n"] == 2 and out["airflow_version"].startswith("3")
    assert out["base"]["load_rate"] == 0.5 and out["base"]["static_agreement"] == 1.0
    assert out["finetuned"]["load_rate"] == 1.0 and out["finetuned"]["static_valid_airflow_fails"] == 0


def test_autofixed_metrics_judge_the_answers_as_a_user_gets_them(clean) -> None:
    code, spec = clean
    lines = code.splitlines(keepends=True)
    dropped = next(ln for ln in lines if ln.startswith("from airflow") and "Operator" in ln)
    forgot = "".join(ln for ln in lines if ln is not dropped)  # an operator import forgotten: DC101/DC102
    assert not judge(forgot, spec, airflow=3).valid
    row = {"uid": "u1", "variant": "terse", "text": f"```python\n{forgot}```", "spec": spec, "finish_reason": "stop"}
    m, _, _ = evaluate({"base": [row], "finetuned": [row]}, 3, 200, 0)
    raw, fixed = m["finetuned"], m["finetuned_autofix"]
    assert raw["valid_rate"] == 0.0 and fixed["valid_rate"] == 1.0 and fixed["n"] == 1
    assert fixed["task_f1"] == 1.0 and raw["task_f1"] < 1.0  # the forgotten operator's tasks count once imported
    assert fixed["valid_rate_lo"] <= fixed["valid_rate"] <= fixed["valid_rate_hi"] and fixed["errors"] == {}
