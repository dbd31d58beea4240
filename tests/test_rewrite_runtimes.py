from pathlib import Path

import pytest

from airflow_net.rewrite.runtimes import load
from tests.support.tiny_t5 import LINES, build_tiny_t5


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("t5") / "model")


def test_fp32_generates_and_times_each_query(t5_folder):
    rt = load("torch-fp32", str(t5_folder), threads=1)
    out = rt.generate(LINES[:3], max_new_tokens=8)
    assert len(out.texts) == 3 and len(out.ms) == 3 and len(out.tokens) == 3
    assert all(ms > 0 for ms in out.ms)
    # Deterministic greedy decoding: same input, same text.
    assert rt.generate(LINES[:1], max_new_tokens=8).texts == out.texts[:1]


def test_ignore_eos_forces_the_full_length(t5_folder):
    rt = load("torch-fp32", str(t5_folder), threads=1)
    assert rt.generate(LINES[:4], max_new_tokens=6, ignore_eos=True).tokens == [6, 6, 6, 6]
    assert all(n <= 6 for n in rt.generate(LINES[:4], max_new_tokens=6).tokens)


def test_int8_matches_fp32_on_most_inputs(t5_folder):
    queries = LINES[:8]
    ref = load("torch-fp32", str(t5_folder), threads=1).generate(queries, max_new_tokens=8).texts
    got = load("torch-int8", str(t5_folder), threads=1).generate(queries, max_new_tokens=8).texts
    # Tolerance: int8 may flip a near-tie argmax on random weights; at least 6 of 8 must match.
    assert sum(a == b for a, b in zip(ref, got, strict=True)) >= 6


def test_bad_folder_and_runtime_fail_with_one_line(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load("torch-fp32", str(tmp_path), threads=1)
    with pytest.raises(ValueError, match="unknown runtime"):
        load("nope", str(tmp_path), threads=1)
