"""The reformulator's export, comparison and latency benchmark (issue 15, items 4 and 6) on tiny models."""

import json

import pytest

from airflow_net.cli import main
from airflow_net.rewrite import shapes
from airflow_net.rewrite.bench import bench_runtimes, cold_start, latency_stats, markdown, run_bench
from airflow_net.rewrite.export import compare, export_all, loadable
from tests.support.tiny_t5 import LINES, build_tiny_t5


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    return build_tiny_t5(tmp_path_factory.mktemp("t5") / "m")


def test_latency_stats_known_values():
    s = latency_stats([float(i) for i in range(1, 101)])
    assert s["n"] == 100 and s["mean"] == 50.5 and s["max"] == 100.0
    assert s["p50"] == 50.5 and s["p99"] == pytest.approx(99.01)
    with pytest.raises(ValueError):
        latency_stats([])


def test_bench_runs_each_runtime_and_skips_a_bad_one(t5):
    out = bench_runtimes({"torch-fp32": str(t5), "torch-int8": str(t5), "nope": str(t5)}, LINES[:3], threads=1,
                         max_new_tokens=4, rounds=2, warmup=1)
    for name in ("torch-fp32", "torch-int8"):
        r = out["runtimes"][name]
        assert r["n"] == 6 and len(r["round_p50"]) == 2 and len(r["ms"]) == 6
        assert 0 < r["p50"] <= r["p99"] <= r["max"]
    assert "unknown runtime" in out["runtimes"]["nope"]["skipped"]


def test_cold_start_runs_in_a_fresh_process(t5, tmp_path):
    r = cold_start("torch-fp32", str(t5), threads=1, query=LINES[0], max_new_tokens=4)
    assert r["cold_start_ms"] >= r["load_ms"] + r["first_answer_ms"] > 0 and r["peak_rss_mb"] > 50
    bad = cold_start("torch-fp32", str(tmp_path), threads=1, query=LINES[0], max_new_tokens=4)
    assert "config.json" in bad["skipped"] and "\n" not in bad["skipped"]


def test_run_bench_ratios_and_fastest(t5):
    res = run_bench({"torch-fp32": str(t5), "torch-int8": str(t5)}, LINES[:2], threads=[1], max_new_tokens=3,
                    rounds=1, warmup=0, cold=False)
    rts = res["by_threads"]["1"]["runtimes"]
    assert rts["torch-fp32"]["speedup_p50_vs_torch_fp32"] == 1.0
    assert rts["torch-int8"]["p99_over_p50"] >= 1.0
    assert res["fastest"]["runtime"] in rts and res["fastest"]["p50"] == min(r["p50"] for r in rts.values())
    md = markdown(res, "t")
    assert "| 1 | torch-int8 |" in md and "median 110 ms" in md
    assert res["best_vs_torch_fp32"]["torch_fp32_threads"] == 1 and "Best against best" in md


def test_best_against_best_takes_each_runtimes_own_thread_count():
    """The headline ratio compares the fastest runtime at its best thread count with torch-fp32 at *its* best:
    here onnx-int8 is fastest at 2 threads and torch-fp32 at 1."""
    from airflow_net.rewrite.bench import fastest

    def r(p50):
        return {"p50": p50, "p99": p50 * 1.1}

    res = {"by_threads": {"1": {"runtimes": {"torch-fp32": r(375.0), "onnx-int8": r(57.0), "bad": {"skipped": "x"}}},
                          "2": {"runtimes": {"torch-fp32": r(640.0), "onnx-int8": r(44.0)}}}}
    assert fastest(res) == {"runtime": "onnx-int8", "threads": 2, "p50": 44.0, "p99": 44.0 * 1.1}
    assert fastest(res, "torch-fp32")["threads"] == 1
    assert fastest(res, "nope") is None


def test_onnx_decoder_workers_spin_only_with_threads(t5, tmp_path):
    """Only the decoder's pool spins, and only with more than one thread (two spinning pools fight over 2 cores)."""
    from airflow_net.rewrite.runtimes import export, load

    export("onnx-fp32", str(t5), str(tmp_path / "onnx"))

    def spin(session):
        o = session.get_session_options()
        return o.intra_op_num_threads, o.get_session_config_entry("session.intra_op.allow_spinning")

    two = load("onnx-fp32", str(tmp_path / "onnx"), threads=2)
    assert spin(two.encoder) == (2, "0") and spin(two.decoder) == (2, "1")
    one = load("onnx-fp32", str(tmp_path / "onnx"), threads=1)
    assert spin(one.encoder) == (1, "0") and spin(one.decoder) == (1, "0")


def test_export_all_and_compare_record_skips_and_agreement(t5, tmp_path, monkeypatch):
    from airflow_net.rewrite import runtimes
    from airflow_net.rewrite.runtimes.torch_runtime import TorchRuntime

    class Broken(TorchRuntime):
        loads_hf_folder = False

        @classmethod
        def export(cls, hf_folder, out_dir, quant=None):
            raise ImportError("no module named 'imaginary'\nsecond line")

    monkeypatch.setitem(runtimes.RUNTIMES, "torch-broken", Broken)
    monkeypatch.setitem(runtimes.QUANT, "torch-broken", None)
    names = ["torch-fp32", "torch-int8", "torch-broken"]
    exported = export_all(names, t5, tmp_path / "rt")
    assert exported["torch-broken"] == {"skipped": "export: no module named 'imaginary'"}
    assert exported["torch-fp32"]["size_bytes"] > 0
    rows = [{"query": q, "rewrite": q} for q in LINES[:4]]
    results, outputs = compare(names, t5, tmp_path / "rt", rows, threads=1, max_new_tokens=6, exported=exported)
    assert results["torch-fp32"]["agree_torch_fp32"] == 1.0 and "rougeL" in results["torch-fp32"]
    assert 0 <= results["torch-int8"]["agree_torch_fp32"] <= 1 and "eval_loss" not in results["torch-int8"]
    assert "skipped" in results["torch-broken"] and set(outputs) == {"torch-fp32", "torch-int8"}
    folders, skipped = loadable(names + ["gguf-q8_0"], t5, tmp_path / "rt")
    assert set(folders) == {"torch-fp32", "torch-int8"} and folders["torch-fp32"] == str(t5)
    assert "imaginary" in skipped["torch-broken"] and "not exported" in skipped["gguf-q8_0"]
    with pytest.raises(ValueError, match="torch-fp32 must be"):
        compare(["torch-int8"], t5, tmp_path / "rt", rows, threads=1, max_new_tokens=4)


def test_cli_benchmarks_a_shape_model(t5, tmp_path, monkeypatch, capsys):
    # a shape small enough for a test, built by the same code as shape:flan-t5-base
    monkeypatch.setitem(shapes.SHAPES, "t5-test", {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_layers": 1,
                                                   "num_decoder_layers": 1, "num_heads": 2})
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"query": q}) + "\n" for q in LINES[:3]))
    with pytest.raises(SystemExit) as e:
        main(["rewrite-bench", "--params", str(shapes_root() / "params.yaml"), "--model", "shape:t5-test",
              "--tokenizer", str(t5), "--data", str(data), "--threads", "1", "--rounds", "1", "--no-cold",
              "--max-new-tokens", "3", "--runtimes", "torch-int8", "--out", str(tmp_path / "out")])
    assert e.value.code == 0
    cfg = json.loads((tmp_path / ".cache/rewrite_shapes/t5-test-v1/hf/config.json").read_text())
    assert cfg["vocab_size"] == shapes.FLAN_T5_VOCAB and cfg["d_model"] == 32 and cfg["tie_word_embeddings"] is False
    assert (tmp_path / ".cache/rewrite_shapes/t5-test-v1/hf/spiece.model").is_file()  # llama.cpp's converter reads it
    res = json.loads((tmp_path / "out/results.json").read_text())
    # torch-fp32 is added as the reference every speed-up is measured against
    assert set(res["by_threads"]["1"]["runtimes"]) == {"torch-fp32", "torch-int8"}
    assert (tmp_path / "out/latency_cdf.png").stat().st_size > 1000
    assert "torch-int8" in capsys.readouterr().out


def test_cli_rejects_unknown_shape_and_runtime(tmp_path, capsys):
    for argv, expect in ((["--model", "shape:gpt-9"], "unknown shape"), (["--runtimes", "tf-fp32"], "unknown runtime")):
        with pytest.raises(SystemExit) as e:
            main(["rewrite-bench", "--params", str(shapes_root() / "params.yaml"), "--tokenizer", str(tmp_path),
                  *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert expect in err and err.count("\n") == 1


def shapes_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]
