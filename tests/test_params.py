"""The params schema: every shipped params file loads; bad values fail with one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_net.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def shipped_params() -> list[Path]:
    return [ROOT / "params.yaml", *sorted((ROOT / "tests" / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", shipped_params(), ids=lambda p: p.name)
def test_shipped_params_load(path: Path) -> None:
    p = load_params(path)
    assert p.train.max_seq_len >= 64


def write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda r: r["lora"].__setitem__("r", 0), "lora.r"),
        (lambda r: r["quant"].__setitem__("type", "Q3_X"), "quant.type: unknown quantization 'Q3_X'"),
        (lambda r: r["train"].__setitem__("max_seq_len", "long"), "train.max_seq_len"),
        (lambda r: r["train"].__setitem__("max_seq_len", 8), "train.max_seq_len"),
        (lambda r: r["train"].__setitem__("learning_rate", 1e-4), "train.learning_rate: unknown key; allowed here:"),
        (lambda r: r.__setitem__("trian", {}), "trian: unknown key"),
        (lambda r: r["base"].__setitem__("num_heads", 3), "hidden_size (256) must be a multiple of num_heads (3)"),
        (lambda r: r["instruct"].__setitem__("provider", "openai"), "instruct.provider"),
        (lambda r: r["corpus"]["sources"].append({"kind": "dir"}), "needs a path"),
        (lambda r: r["evaluate"].__setitem__("judge", "gpt"), "evaluate.judge"),
        (lambda r: r["evaluate"].__setitem__("judge", "openai"), "evaluate.judge 'openai' needs evaluate.judge_endpoint"),
    ],
)
def test_bad_params_fail_with_one_line(tmp_path: Path, mutate, expect: str) -> None:
    path = write(tmp_path, mutate)
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert expect in msg, msg


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_quant_type_is_normalized(tmp_path: Path) -> None:
    p = load_params(write(tmp_path, lambda r: r["quant"].__setitem__("type", "q8_0")))
    assert p.quant.type == "Q8_0"


def test_stage_reports_bad_params_as_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, lambda r: r["lora"].__setitem__("r", 0))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "corpus.py"), "--params", str(path), "--out", str(tmp_path / "c"),
         "--metrics", str(tmp_path / "m.json")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "lora.r" in proc.stderr


@pytest.mark.parametrize("path", shipped_params(), ids=lambda p: p.name)
def test_shipped_params_have_every_key_dvc_yaml_declares(path: Path) -> None:
    """DVC reads the params file itself: a section dvc.yaml names must be written out, not defaulted."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    raw = yaml.safe_load(path.read_text())
    for name, stage in stages.items():
        for key in stage.get("params") or stage.get("do", {}).get("params", []):  # foreach stages: under `do`
            node = raw
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{path.name} lacks '{key}' (stage {name})"
                node = node[part]
