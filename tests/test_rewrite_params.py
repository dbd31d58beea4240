"""The rewrite section's runtimes/quant/export/bench params (issue 15 part B): defaults load, bad values fail
with one line, and the names they select are exactly the runtimes the registry knows."""

from pathlib import Path

import pytest
import yaml

from airflow_net.params import REWRITE_QUANTS, ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, rewrite: dict) -> Path:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["rewrite"] = {**data.get("rewrite", {}), **rewrite}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_threads_sorted(tmp_path):
    p = load_params(_write(tmp_path, {"bench": {"threads": [2, 1]}}))
    assert p.rewrite.bench.threads == [1, 2] and p.rewrite.bench.max_new_tokens == 24
    assert p.rewrite.runtime_names[0] == "torch-fp32"


def test_names_are_family_times_quant_in_params_order(tmp_path):
    p = load_params(_write(tmp_path, {"runtimes": ["torch", "gguf"], "runtime": "gguf-f16",
                                      "quant": {"gguf": ["q4_0", "f16"], "torch": ["fp32"], "onnx": ["int8"]}}))
    # onnx has quantizations listed but is not among the runtimes: it exports nothing
    assert p.rewrite.runtime_names == ["torch-fp32", "gguf-q4_0", "gguf-f16"]


def test_every_name_the_params_allow_is_a_registered_runtime():
    from airflow_net.rewrite.runtimes import QUANT, RUNTIMES

    allowed = {f"{fam}-{q}" for fam, qs in REWRITE_QUANTS.items() for q in qs}
    assert set(RUNTIMES) == set(QUANT) <= allowed
    assert {n.split("-")[0] for n in RUNTIMES} <= set(REWRITE_QUANTS)


@pytest.mark.parametrize("rewrite, expect", [
    ({"bench": {"threads": [1, 1]}}, "distinct"),
    ({"bench": {"rounds": 0}}, "rewrite.bench.rounds"),
    ({"bench": {"colour": "red"}}, "unknown key"),
    ({"runtimes": ["tensorflow"]}, "rewrite.runtimes"),
    ({"runtimes": ["torch", "torch"]}, "twice"),
    ({"quant": {"torch": ["fp32"], "gguf": ["q3_k"]}}, "rewrite.quant.gguf"),
    ({"quant": {"torch": ["fp32"], "tpu": ["int8"]}}, "unknown runtime family"),
    ({"quant": {"torch": ["int8"]}}, "torch fp32"),
    ({"export": {"compare_examples": 0}}, "rewrite.export.compare_examples"),
    ({"runtime": "onnx-int8", "runtimes": ["torch"]}, "rewrite.runtime 'onnx-int8' is not exported"),
])
def test_bad_params_fail_with_one_line(tmp_path, rewrite, expect):
    with pytest.raises(ParamsError, match=expect) as e:
        load_params(_write(tmp_path, rewrite))
    assert "\n" not in str(e.value)
