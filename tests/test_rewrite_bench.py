import pytest

from airflow_net.rewrite.bench import bench_runtimes, latency_stats
from tests.support.tiny_t5 import LINES, build_tiny_t5


def test_latency_stats_known_values():
    s = latency_stats([float(i) for i in range(1, 101)])
    assert s["n"] == 100 and s["mean"] == 50.5 and s["max"] == 100.0
    assert s["p50"] == 50.5 and s["p99"] == pytest.approx(99.01)
    with pytest.raises(ValueError):
        latency_stats([])


def test_bench_runs_each_runtime_and_skips_a_bad_one(tmp_path):
    folder = str(build_tiny_t5(tmp_path / "m"))
    out = bench_runtimes(folder, ["torch-fp32", "torch-int8", "nope"], LINES[:3], threads=1,
                         max_new_tokens=4, rounds=2, warmup=1)
    for name in ("torch-fp32", "torch-int8"):
        r = out["runtimes"][name]
        assert r["n"] == 6 and len(r["round_p50"]) == 2
        assert 0 < r["p50"] <= r["p99"] <= r["max"] and r["cold_start_ms"] > 0
    assert "unknown runtime" in out["runtimes"]["nope"]["skipped"]


def test_bench_takes_a_folder_per_runtime(tmp_path):
    from airflow_net.rewrite.runtimes import export

    hf = str(build_tiny_t5(tmp_path / "m"))
    export("onnx-int8", hf, str(tmp_path / "onnx-int8"))
    folders = {"torch-fp32": hf, "onnx-int8": str(tmp_path / "onnx-int8")}
    out = bench_runtimes(folders, ["torch-fp32", "onnx-int8", "ct2-fp32"], LINES[:2], threads=1,
                         max_new_tokens=3, rounds=1, warmup=0)
    assert out["runtimes"]["torch-fp32"]["n"] == 2 and out["runtimes"]["onnx-int8"]["n"] == 2
    assert "no folder given" in out["runtimes"]["ct2-fp32"]["skipped"]
