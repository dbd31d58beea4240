"""Generation strategies over a scripted backend and the real dagcheck judge."""

from __future__ import annotations

import pytest

from airflow_net.generate.strategies import Outcome, dagcheck_judge, format_findings, run_strategy

VALID = '''```python
from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="d", start_date=datetime(2024, 1, 1), schedule=None):
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    a >> b
```'''
BROKEN = "```python\nfrom airflow.sdk import DAG\nwith DAG(dag_id='d'\n```"  # syntax error


class Scripted:
    """A backend answering from a script keyed by (temperature, seed); records every call."""

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[tuple[list, float, object]] = []

    def __call__(self, conversations, *, temperature=0.0, seed=0):
        self.calls.append((conversations, temperature, seed))
        seeds = seed if isinstance(seed, list) else [seed] * len(conversations)
        return [{"text": self.answer(c, temperature, s), "completion_tokens": 5} for c, s in zip(conversations, seeds, strict=True)]


MSG = [{"role": "user", "content": "make a dag"}]
JUDGE = dagcheck_judge(3)


def test_judge_tells_valid_from_broken():
    from airflow_net.evaluate.metrics import extract_code

    assert JUDGE(extract_code(VALID)).ok
    assert not JUDGE(extract_code(BROKEN)).ok


def test_best_of_n_greedy_first_then_one_batch_first_valid_and_deterministic():
    # candidates seeded 10..13; seeds 12 and 13 give valid answers: the first valid in order (seed 12) wins
    def answer(conv, temp, seed):
        return VALID.replace('"d"', f'"d{seed}"') if seed >= 12 else BROKEN

    be = Scripted(answer)
    out = run_strategy("best_of_n", MSG, be, JUDGE, n=4, seed=10, temperature=0.8)
    assert [len(c[0]) for c in be.calls] == [1, 3]  # the greedy answer alone, then the samples in one batch
    assert be.calls[0][1:] == (0.0, 10) and be.calls[1][1:] == ([0.8, 0.8, 0.8], [11, 12, 13])
    assert out.valid and 'dag_id="d12"' in out.code and out.candidates == 4
    again = run_strategy("best_of_n", MSG, Scripted(answer), JUDGE, n=4, seed=10, temperature=0.8)
    assert again.code == out.code


def test_best_of_n_stops_judging_at_first_valid():
    judged = []

    def judge(code):
        judged.append(code)
        return JUDGE(code)

    be = Scripted(lambda c, t, s: VALID if s == 1 else BROKEN)
    out = run_strategy("best_of_n", MSG, be, judge, n=4, seed=0)
    assert out.valid and len(judged) == 2  # seeds 0 (broken), 1 (valid); 2 and 3 never judged
    greedy_ok = Scripted(lambda c, t, s: VALID)
    out = run_strategy("best_of_n", MSG, greedy_ok, JUDGE, n=4, seed=0)
    assert out.valid and out.candidates == 1 and len(greedy_ok.calls) == 1  # no samples needed: none made


def test_best_of_n_falls_back_to_fewest_errors():
    be = Scripted(lambda c, t, s: BROKEN)
    out = run_strategy("best_of_n", MSG, be, JUDGE, n=3, seed=0)
    assert not out.valid and out.errors >= 1 and out.candidates == 3


def test_best_of_n_prefers_a_candidate_that_parses_over_one_with_fewer_findings():
    two_errors = "```python\nfrom airflow.sdk import DAG\nwith DAG(dag_id='d', schedule=None):\n    x = y + z\n```"
    be = Scripted(lambda c, t, s: two_errors if s == 0 else "ner`vm python\nimport")  # a sample that broke early
    out = run_strategy("best_of_n", MSG, be, JUDGE, n=3, seed=0)
    assert "x = y + z" in out.code and not out.valid


def test_repair_feeds_back_exactly_the_findings_and_stops_after_rounds():
    be = Scripted(lambda c, t, s: BROKEN)
    out = run_strategy("repair", MSG, be, JUDGE, rounds=2)
    assert not out.valid and out.rounds == 2 and len(be.calls) == 3  # first answer + 2 repairs, no more
    # each follow-up turn is exactly the validator's findings on the answer before it
    from airflow_net.dagcheck.findings import Report
    from airflow_net.evaluate.metrics import extract_code

    rep: Report = JUDGE(extract_code(BROKEN))
    expected = format_findings(rep.errors)
    conv = be.calls[2][0][0]
    assert conv[:1] == MSG and [m["role"] for m in conv] == ["user", "assistant", "user", "assistant", "user"]
    assert conv[2]["content"] == expected and conv[4]["content"] == expected
    for f in rep.errors:
        assert f"{f.code} line {f.line}: {f.message}" in expected


def test_repair_keeps_the_best_answer_when_a_round_makes_it_worse():
    two_errors = "```python\nfrom airflow.sdk import DAG\nwith DAG(dag_id='d', schedule=None):\n    x = y + z\n```"
    worse = "```python\nimport\n```"  # a syntax error: the repaired answer is worse than the first one

    def answer(conv, temp, seed):
        return two_errors if len(conv) == 1 else worse

    out = run_strategy("repair", MSG, Scripted(answer), JUDGE, rounds=2)
    assert "x = y + z" in out.code  # the first answer parses; the repaired one does not
    assert out.rounds == 2 and out.candidates == 3 and not out.valid


def test_repair_stops_when_valid():
    def answer(conv, temp, seed):
        return VALID if len(conv) > 1 else BROKEN

    be = Scripted(answer)
    out = run_strategy("repair", MSG, be, JUDGE, rounds=5)
    assert out.valid and out.rounds == 1 and len(be.calls) == 2


def test_repair_of_valid_direct_sends_nothing():
    be = Scripted(lambda c, t, s: VALID)
    out = run_strategy("repair", MSG, be, JUDGE, rounds=3)
    assert isinstance(out, Outcome) and out.valid and out.rounds == 0 and len(be.calls) == 1


def test_compose_best_of_n_then_repair():
    def answer(conv, temp, seed):
        return VALID if len(conv) > 1 else BROKEN

    be = Scripted(answer)
    out = run_strategy("best_of_n_repair", MSG, be, JUDGE, n=3, rounds=2)
    assert out.valid and out.rounds == 1 and out.candidates == 4


def test_templated_renders_every_corpus_spec_valid_and_as_requested():
    """The canonical request of each synthetic spec renders through the factory, passes dagcheck and re-extracts to
    the spec's structure, without a model token; nothing falls back."""
    from airflow_net.dagcheck import extract_structure
    from airflow_net.data.canonical import format_canonical
    from airflow_net.data.factory import generate

    backend = Scripted(lambda *_: pytest.fail("templated must not call the model for a canonical request"))
    for spec, _ in generate(150, seed=5, airflow3_share=0.7, max_tasks=4):
        req = [{"role": "user", "content": format_canonical(spec)}]
        out = run_strategy("templated", req, backend, dagcheck_judge(spec.airflow), airflow=spec.airflow)
        assert out.valid and not out.fallback and out.candidates == 0 and out.completion_tokens == 0, out.findings
        assert extract_structure(out.code).to_dict() == spec.structure().to_dict(), format_canonical(spec)
    assert backend.calls == []


def test_templated_uses_the_reformulation_then_falls_back():
    backend = Scripted(lambda c, t, s: VALID)
    person = [{"role": "user", "content": "hey can u make the dag orders_sync, every 15 min: pull_orders then load"}]
    # the request itself does not parse, its reformulation does: rendered, no model call
    seen = []
    out = run_strategy("templated", person, backend, JUDGE,
                       reformulate=lambda t: seen.append(t) or "dag orders_sync | schedule */15 * * * * | "
                                                                "pull_orders[Bash] >> load[@task]")
    assert seen == [person[0]["content"]] and out.valid and not out.fallback and backend.calls == []
    assert "orders_sync" in out.code and "pull_orders" in out.code
    # neither parses: the fallback strategy answers, and says so
    out = run_strategy("templated", person, backend, JUDGE, reformulate=lambda t: "not canonical", fallback="direct")
    assert out.fallback and out.valid and out.candidates == 1 and len(backend.calls) == 1
    with pytest.raises(ValueError, match="fallback"):
        run_strategy("templated", person, backend, JUDGE, fallback="templated")


def test_reformulated_sends_the_reformulation_to_the_model_once():
    backend = Scripted(lambda c, t, s: VALID)
    conv = [{"role": "system", "content": "sys"},
            {"role": "user", "content": "hey can u make the dag orders_sync, every 15 min"}]
    out = run_strategy("reformulated", conv, backend, JUDGE, reformulate=lambda t: t.upper())
    assert out.valid and out.candidates == 1 and len(backend.calls) == 1
    sent = backend.calls[0][0][0]
    assert sent[0] == conv[0] and sent[1]["content"] == conv[1]["content"].upper()
    assert conv[1]["content"].startswith("hey")  # the caller's conversation is not modified
    with pytest.raises(ValueError, match="rewrite model"):
        run_strategy("reformulated", conv, backend, JUDGE)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="strategy must be one of"):
        run_strategy("nope", MSG, Scripted(lambda *a: VALID), JUDGE)


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["direct", "best_of_n", "repair"])
def test_cli_generate_with_strategy(tmp_path, capsys, strategy):
    """`airflow-net generate --strategy` over the in-process engine on the tiny bigram GGUF (greedy: a valid DAG)."""
    from pathlib import Path

    from airflow_net.cli import main
    from tests.support import tiny_gguf

    if not tiny_gguf.available():
        pytest.skip("vendored gguf-py missing")
    model = tiny_gguf.build(tmp_path / "tiny.gguf")
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["generate", tiny_gguf.INSTRUCTION, "--model", str(model), "--params", str(params),
              "--strategy", strategy, "-n", "2", "--max-tokens", "200"])
    out, err = capsys.readouterr()
    assert f"# strategy: {strategy};" in err and "# dagcheck:" in err, err
    # greedy reproduces the teacher's DAG, valid: best_of_n needs no sample after it, repair no round
    assert "candidates: 1;" in err and out == tiny_gguf.DAG and exc.value.code == 0


def test_cli_templated_renders_a_canonical_request_without_any_model(tmp_path, capsys, monkeypatch):
    """The default strategy: a canonical request renders as it is (no DAG model, no reformulator in this cwd)."""
    from pathlib import Path

    from airflow_net.cli import main

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    monkeypatch.chdir(tmp_path)  # no models/rewrite/finetuned here
    with pytest.raises(SystemExit) as exc:
        main(["generate", "dag orders_sync | schedule */15 * * * * | pull_orders[Bash] >> load_orders[@task]",
              "--params", str(params)])
    out, err = capsys.readouterr()
    assert exc.value.code == 0 and '"orders_sync"' in out and "load_orders" in out
    assert "# strategy: templated;" in err and "# dagcheck: valid" in err
    with pytest.raises(SystemExit) as exc:
        main(["generate", "make me a dag", "--params", str(params), "--strategy", "reformulated"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "needs the rewrite model" in err and err.count("\n") == 1


def test_repair_stops_when_the_conversation_outgrows_the_context():
    """A follow-up that no longer fits the context ends the rounds: the best answer so far, no crash."""
    from airflow_net.serve.engine import PromptTooLong

    calls = []

    def backend(conversations, *, temperature=0.0, seed=0):
        calls.append(len(conversations[0]))
        if len(calls) > 1:
            raise PromptTooLong("the prompt has 2154 tokens but a slot's context holds 2048")
        return [{"text": BROKEN, "completion_tokens": 5}]

    out = run_strategy("repair", MSG, backend, JUDGE, rounds=3)
    assert not out.valid and out.rounds == 0 and out.candidates == 1 and calls == [1, 3]
    assert out.history == []  # nothing that was not sent is recorded as sent


def test_sample_overrides_name_a_strategy_and_keep_the_shared_requests():
    from airflow_net.params import StrategiesParams

    p = StrategiesParams(sample=12, sample_overrides={"templated": 188})
    assert p.sample_overrides == {"templated": 188}
    with pytest.raises(ValueError, match="unknown strategy 'templatd'"):
        StrategiesParams(sample=12, sample_overrides={"templatd": 188})
    with pytest.raises(ValueError, match="expected at least strategies.sample"):
        StrategiesParams(sample=12, sample_overrides={"templated": 5})


def test_more_dags_start_with_the_shared_ones():
    """pick_per_dag's sample for n DAGs is the first n of its sample for more: a strategy run on more DAGs
    (strategies.sample_overrides) answers the shared requests too."""
    from airflow_net.generate.compare import pick_per_dag

    rows = [{"uid": f"u{i:03d}", "variant": v, "spec": {"dag_id": f"d{i}"}} for i in range(40) for v in ("a", "b")]
    few = [(r["uid"], r["variant"]) for r in pick_per_dag(rows, 5, 0)]
    more = [(r["uid"], r["variant"]) for r in pick_per_dag(rows, 30, 0)]
    assert len(few) == 5 and len(more) == 30 and more[:5] == few
    assert len({u for u, _ in more}) == 30  # one request per DAG


def test_autofix_returns_and_judges_the_code_with_the_missing_imports_added():
    forgot = VALID.replace("from airflow.providers.standard.operators.empty import EmptyOperator\n", "")
    plain = run_strategy("direct", MSG, Scripted(lambda *_: forgot), JUDGE)
    assert not plain.valid and [f["code"] for f in plain.findings] == ["DC102"]
    fixed = run_strategy("direct", MSG, Scripted(lambda *_: forgot), dagcheck_judge(3, autofix=True))
    assert fixed.valid and "import EmptyOperator" in fixed.code and fixed.text == forgot  # the model's text kept
