"""The rewrite section's export/bench params (issue 15 part B): defaults load, bad values fail with one line."""

from pathlib import Path

import pytest
import yaml

from airflow_net.params import ParamsError, load_params

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
    assert "torch-fp32" in p.rewrite.export.runtimes


@pytest.mark.parametrize("bench, expect", [
    ({"runtimes": ["tensorflow"]}, "rewrite.bench.runtimes"),
    ({"threads": [1, 1]}, "distinct"),
    ({"rounds": 0}, "rewrite.bench.rounds"),
    ({"colour": "red"}, "unknown key"),
])
def test_bad_bench_params_fail_with_one_line(tmp_path, bench, expect):
    with pytest.raises(ParamsError, match=expect) as e:
        load_params(_write(tmp_path, {"bench": bench}))
    assert "\n" not in str(e.value)
