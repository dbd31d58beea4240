"""Quantization quality: the KL / top-1 measure (llama.cpp's method), the shipping rule, teacher forcing on a real
GGUF, and one sweep item end to end on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from airflow_net.export.quality import (
    answer_kl,
    pick_smallest,
    summarise_kl,
    teacher_forced,
    token_kl,
)
from airflow_net.params import GenerateParams, ParamsError, QuantSweepParams, load_params
from airflow_net.serve.engine import Engine
from airflow_net.utils import UserError
from tests.test_engine import SYSTEM, tiny_dir, tiny_gguf  # noqa: F401  (tiny_dir is a fixture)

# ---------------------------------------------------------------- KL and top-1


def test_identical_distributions_have_zero_kl_and_full_agreement() -> None:
    logits = np.random.default_rng(0).normal(size=(50, 300)).astype(np.float32)
    kl, agree = token_kl(logits, logits.copy())
    assert kl.shape == (50,) and np.all(kl == 0.0) and agree.all()
    s = summarise_kl([kl], [agree])
    assert (s.tokens, s.kl_mean, s.kl_p99, s.top1_agreement) == (50, 0.0, 0.0, 1.0)


def test_kl_matches_the_formula_and_is_not_symmetric() -> None:
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.4, 0.4, 0.2])
    kl, agree = token_kl(np.log(p), np.log(q) + 3.0)  # logits: any shift gives the same distribution
    assert kl[0] == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p, q, strict=True)), rel=1e-9)
    assert agree[0]  # both rank token 0 first
    back, _ = token_kl(np.log(q), np.log(p))
    assert back[0] != pytest.approx(kl[0])


def test_a_perturbed_distribution_diverges_and_flips_some_top_tokens() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(400, 200))
    kl, agree = token_kl(ref, ref + rng.normal(scale=0.5, size=ref.shape))
    s = summarise_kl([kl[:150], kl[150:]], [agree[:150], agree[150:]])
    assert s.tokens == 400 and s.kl_mean > 0.01 and s.kl_p99 >= s.kl_mean and s.kl_max >= s.kl_p99
    assert 0.2 < s.top1_agreement < 1.0
    smaller, _ = token_kl(ref, ref + rng.normal(scale=0.05, size=ref.shape))
    assert 0 < smaller.mean() < kl.mean()  # more noise, more divergence


def test_mismatched_or_empty_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same shape"):
        token_kl(np.zeros((2, 5)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match="same positive number"):
        summarise_kl([], [])


# ---------------------------------------------------------------- the shipping rule


def result(size: float, valid: float, f1: float, kl: float, *, ci: tuple[float, float, float, float] = (0, 1, 0, 1),
           max_kl: float = 0.05) -> dict:
    return {"size_mb": size, "valid_rate": valid, "valid_rate_lo": ci[0], "valid_rate_hi": ci[1],
            "structural_f1": f1, "structural_f1_lo": ci[2], "structural_f1_hi": ci[3], "kl_mean": kl, "max_kl": max_kl}


def test_pick_is_the_smallest_type_inside_f16s_intervals() -> None:
    sweep = {
        "F16": result(8.0, 0.50, 0.60, 0.0, ci=(0.40, 0.60, 0.55, 0.65)),
        "Q8_0": result(4.2, 0.52, 0.61, 0.001),
        "Q4_K_M": result(2.6, 0.45, 0.56, 0.02),
        "Q4_0": result(2.3, 0.30, 0.58, 0.04),  # smaller, but its valid rate is below F16's interval
    }
    choice = pick_smallest(sweep)
    assert choice["pick"] == "Q4_K_M"
    assert choice["verdicts"]["Q4_0"] == {"ok": False, "outside": ["valid_rate"]}
    assert all(choice["verdicts"][t]["ok"] for t in ("F16", "Q8_0", "Q4_K_M"))


def test_kl_above_max_kl_or_f1_outside_the_interval_disqualifies() -> None:
    sweep = {
        "F16": result(8.0, 0.5, 0.6, 0.0, ci=(0.4, 0.6, 0.55, 0.65)),
        "Q4_K_M": result(2.6, 0.5, 0.6, 0.2),  # inside on both scores, but diverges too much
        "Q4_0": result(2.3, 0.5, 0.5, 0.01),  # structural F1 below the interval
    }
    choice = pick_smallest(sweep)
    assert choice["pick"] == "F16"
    assert choice["verdicts"]["Q4_K_M"]["outside"] == ["kl_mean"]
    assert choice["verdicts"]["Q4_0"]["outside"] == ["structural_f1"]


def test_without_the_reference_nothing_is_picked() -> None:
    choice = pick_smallest({"Q4_0": result(2.3, 0.5, 0.5, 0.01)})
    assert choice["pick"] is None and "F16" in choice["reason"]


# ---------------------------------------------------------------- params


def test_sweep_params_validate_types(tmp_path: Path) -> None:
    assert QuantSweepParams(types=["f16", "q4_k_m"]).types == ["F16", "Q4_K_M"]
    bad = tmp_path / "p.yaml"
    bad.write_text("quant_sweep:\n  types: [F16, Q3_X]\n")
    with pytest.raises(ParamsError, match="quant_sweep.types: unknown quantization 'Q3_X'"):
        load_params(bad)
    bad.write_text("quant_sweep:\n  types: [Q8_0, q8_0]\n")
    with pytest.raises(ParamsError, match="distinct"):
        load_params(bad)


# ---------------------------------------------------------------- on a real GGUF


def chat(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"a DAG number {i} that loads {7 * i} files from S3"},
            {"role": "assistant", "content": f"```python\nfrom airflow.sdk import DAG\n\nwith DAG('load_{i}'):\n"
                                             "    pass\n```"}]


@pytest.fixture(scope="module")
def engines(tiny_dir: Path):  # noqa: F811
    with Engine(tiny_gguf(tiny_dir, "F16"), n_parallel=1, n_ctx=512, n_threads=2) as f16, \
            Engine(tiny_gguf(tiny_dir, "F16"), n_parallel=1, n_ctx=512, n_threads=2) as again, \
            Engine(tiny_gguf(tiny_dir, "Q4_K_M"), n_parallel=1, n_ctx=512, n_threads=2) as q4:
        yield f16, again, q4


def test_teacher_forced_logits_are_the_next_token_logits(engines) -> None:
    f16, _, _ = engines
    tokens, first = teacher_forced(f16, chat(1))
    assert tokens[-1] == f16.eos_token and first < len(tokens) - 1
    assert f16.detokenize(tokens[first:-1]) == chat(1)[-1]["content"]
    with pytest.raises(UserError, match="raise generate.n_ctx"):
        teacher_forced(f16, chat(1), max_tokens=first)
    rows = f16.sequence_logits(tokens, first - 1)
    assert rows.shape == (len(tokens) - first + 1, f16.n_vocab)
    for k in (0, 5, len(rows) - 1):  # read one by one from scratch, the same numbers
        alone = f16.next_token_logits(tokens[: first + k])
        np.testing.assert_allclose(rows[k], alone, rtol=1e-4, atol=1e-4)


def test_same_model_gives_zero_kl_and_a_quantized_one_does_not(engines) -> None:
    f16, again, q4 = engines
    kl, agree = answer_kl(f16, again, chat(2))
    assert kl.size > 5 and float(kl.max()) < 1e-6 and agree.all()
    kl_q, agree_q = answer_kl(f16, q4, chat(2))
    assert kl_q.size == kl.size and float(kl_q.mean()) > 1e-5 and agree_q.mean() > 0.5


def test_one_sweep_item_on_the_tiny_model(engines, tiny_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from airflow_net.export.sweep import sweep_type

    spec = {"dag_id": "load_3", "schedule": None, "start_date": "2024-01-01", "edges": [],
            "tasks": [{"task_id": "extract", "operator": "BashOperator"}]}
    requests = [{"uid": f"u{i}", "variant": "terse", "messages": chat(i), "spec": spec, "airflow": 3} for i in (3, 4)]
    gen = GenerateParams(max_tokens=16, n_ctx=512, n_threads=2, parallel=2, copy_ids=False)
    res = sweep_type("Q4_0", tiny_gguf(tiny_dir, "F16"), requests, work_dir=tmp_path, gen=gen, seed=0,
                     resamples=100, bootstrap_seed=0, max_kl=0.05)
    m = res.metrics
    assert m["type"] == "Q4_0" and m["requests"] == 2 and 0 < m["size_vs_reference"] < 0.5
    assert m["kl_mean"] > 0 and m["kl_tokens"] == sum(r["kl_tokens"] for r in res.rows)
    assert 0 <= m["structural_f1_lo"] <= m["structural_f1"] <= m["structural_f1_hi"] <= 1
    assert m["kl_ok"] == (m["kl_mean"] <= 0.05) and m["completion_tokens"] > 0
    assert not list(tmp_path.glob("*.gguf"))  # the quantized file is not kept
    json.dumps(res.rows)  # the stage writes them as JSON lines


# ---------------------------------------------------------------- the report's table


def test_report_table_names_the_pick_and_why_the_others_failed(tmp_path: Path) -> None:
    from airflow_net.report import load_quant_sweep, quant_sweep_section

    extra = {"requests": 8, "tokens_per_s": 100.0, "tokens_per_cpu_s": 60.0, "kl_p99": 0.0, "top1_agreement": 1.0}
    sweep = {
        "F16": result(8.0, 0.5, 0.6, 0.0, ci=(0.4, 0.6, 0.55, 0.65)) | {"size_vs_reference": 1.0},
        "Q8_0": result(4.2, 0.5, 0.6, 0.001) | {"size_vs_reference": 0.53},
        "Q4_0": result(2.3, 0.2, 0.6, 0.01) | {"size_vs_reference": 0.29},
    }
    folder = tmp_path / "quant_sweep"
    folder.mkdir()
    for name, m in sweep.items():
        (folder / f"{name}.json").write_text(json.dumps(m | extra))
    loaded = load_quant_sweep(tmp_path)
    assert set(loaded) == set(sweep)
    text = "\n".join(quant_sweep_section(loaded))
    assert "**Smallest type within F16: Q8_0** (4.20 MB, 53% of F16" in text
    rows = [line for line in text.splitlines() if line.startswith("| Q") or line.startswith("| F16")]
    assert [r.split("|")[1].strip() for r in rows] == ["F16", "Q8_0", "Q4_0"]  # largest first
    assert rows[2].endswith("| no: valid_rate |") and rows[1].endswith("| yes |")
    assert quant_sweep_section(load_quant_sweep(tmp_path / "none")) == []  # the sweep has not run
