"""Missing inputs give one clear error line (exit code 2), not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "stage, args, expect",
    [
        ("instruct", ["--corpus", "nope", "--out", "o", "--metrics", "m.json"], "nope/dags.jsonl: not found"),
        ("prepare", ["--pairs", "nope", "--base", "b", "--out", "o", "--metrics", "m.json"], "nope/pairs.jsonl: not found"),
        ("generate", ["--models", "nope", "--data", "d", "--out", "o", "--metrics", "m.json"], "not found"),
        ("evaluate", ["--generated", "nope", "--out", "o", "--metrics", "m.json"], "nope/base.jsonl: not found"),
    ],
)
def test_missing_input_is_one_line(tmp_path: Path, stage: str, args: list[str], expect: str) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "test.jsonl").write_text('{"uid": "x", "messages": []}\n')
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{stage}.py"), "--params", str(ROOT / "params.yaml"), *args],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expect in last, proc.stderr
    assert not (tmp_path / "o").exists()  # nothing half-written
