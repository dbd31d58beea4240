"""The inference benchmark: its arithmetic, the roofline, shape models, and a small run of every method that
checks they all did exactly the same work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_net.bench import hardware, report, shapes
from airflow_net.bench.methods import Run
from airflow_net.bench.workload import build_workload
from airflow_net.params import BenchParams
from airflow_net.utils import UserError
from tests.test_engine import SYSTEM, tiny_dir, tiny_gguf  # noqa: F401  (tiny_dir is a fixture)

ROOT = Path(__file__).resolve().parents[1]


def rec(t0: float, first: float, end: float, n: int = 10, p: int = 100) -> dict:
    return {"prompt": 0, "prompt_tokens": p, "completion_tokens": n, "t_start": t0, "t_first": first, "t_end": end}


def test_summarize_computes_throughput_latency_and_roofline() -> None:
    run = Run("python-engine", 2, records=[rec(0.0, 0.5, 2.5), rec(0.0, 1.0, 4.0)], peak_rss_mb=123.0)
    s = report.summarize(run, mean_dag_tokens=5.0, roofline_tps=10.0)
    assert s["wall_s"] == 4.0 and s["generated_tokens"] == 20 and s["generated_tps"] == 5.0
    assert s["prompt_tps"] == round(200 / 1.5, 1)  # prompt tokens over summed time to first token
    assert s["decode_tps_per_stream"] == round((9 / 2.0 + 9 / 3.0) / 2, 2)
    assert s["dags_per_s"] == 1.0 and s["roofline_fraction"] == 0.5
    assert s["ttft_p50"] == 0.75 and s["latency_p99"] == pytest.approx(3.985)
    assert s["peak_rss_mb"] == 123.0
    assert report.summarize(Run("llama-cpp", 2, skipped="one sequence"), mean_dag_tokens=5, roofline_tps=1) == {
        "method": "llama-cpp", "workers": 2, "skipped": "one sequence"}


def test_ratios_compare_what_was_measured() -> None:
    rows = [{"method": m, "workers": w, "generated_tps": v, "decode_roofline_fraction": 0.93}
            for m, w, v in [("python-engine", 1, 50.0), ("python-engine", 4, 80.0), ("llama-server", 4, 78.0),
                            ("llama-cpp", 1, 52.0), ("transformers-fp32", 1, 7.0), ("transformers-bf16", 1, 12.5)]]
    r = report.ratios(rows)
    assert r["python_engine_x4_vs_llama_server_x4"]["ratio"] == round(80 / 78, 3)
    assert r["python_engine_x4_vs_llama_server_x4"]["met"] is True
    assert r["python_engine_x4_vs_x1"]["ratio"] == 1.6 and r["python_engine_x4_vs_x1"]["met"] is True
    assert r["llama_cpp_vs_transformers"]["denominator"] == 12.5  # the faster of fp32 and bf16
    assert r["llama_cpp_vs_transformers"]["met"] is False  # 4.16x < 5x
    assert r["single_stream_decode_vs_roofline"]["met"] is True
    assert "python_engine_x4_vs_stock_server_x4" not in r  # not measured: left out, not invented


def test_with_repeats_ratios_are_also_given_round_by_round() -> None:
    def rows(engine: list[float], server: list[float]) -> list[dict]:
        out = []
        for m, reps in (("python-engine", engine), ("llama-server", server)):
            runs = [{"method": m, "workers": 4, "generated_tps": v} for v in reps]
            out.append(report.median_run(runs))
        return out

    # rounds ran side by side: a slow round slows both methods, and the round's ratio stays put
    r = report.ratios(rows([50.0, 40.0, 55.0], [48.0, 41.0, 52.0]))["python_engine_x4_vs_llama_server_x4"]
    assert r["ratio"] == round(50 / 48, 3) and r["rounds"] == [round(50 / 48, 3), round(40 / 41, 3), round(55 / 52, 3)]
    assert r["met"] is True and r["within_noise"] is True  # one round of three fell short
    r = report.ratios(rows([50.0, 52.0], [45.0, 46.0]))["python_engine_x4_vs_llama_server_x4"]
    assert r["met"] is True and "within_noise" not in r
    failed = {"method": "llama-server", "workers": 4, "skipped": "failed: HTTP 500"}
    engine = report.median_run([{"method": "python-engine", "workers": 4, "generated_tps": v} for v in (50.0, 52.0)])
    server = report.median_run([{"method": "llama-server", "workers": 4, "generated_tps": 49.0}, failed])
    r = report.ratios([engine, server])["python_engine_x4_vs_llama_server_x4"]
    assert "rounds" not in r and r["ratio"] == round(50 / 49, 3)  # rounds no longer pair up: medians only
    md = report.markdown({"model": {"name": "x", "gguf": "x.gguf", "size_mb": 1, "n_params": 1e6},
                          "workload": {"requests": 2, "prompt_tokens": [3, 4], "max_tokens": 8, "mean_dag_tokens": 9},
                          "machine": {"cpu": "c", "cores": 2, "memory_gib": 1, "load_average": [0, 0, 0]},
                          "threads": 2, "roofline": {"bandwidth_gbs": 1, "bytes_per_token": 1e6, "tokens_per_s": 1},
                          "ratios": report.ratios(rows([50.0, 40.0, 55.0], [48.0, 41.0, 52.0])), "results": []})
    assert "1.04x (by round: 1.04, 0.98, 1.06) | 1.00 | yes, within the rounds' spread |" in md


def test_repeats_report_the_median_run_and_the_spread() -> None:
    def row(tps: float, **kw: object) -> dict:
        return {"method": "python-engine", "workers": 4, "generated_tps": tps, "ttft_p50": tps / 100, **kw}

    m = report.median_run([row(50.0), row(40.0), row(60.0)])
    assert m["generated_tps"] == 50.0 and m["ttft_p50"] == 0.5  # the whole median run, not a mix of runs
    assert m["repeats_tps"] == [50.0, 40.0, 60.0] and m["spread"] == 0.4
    assert report.median_run([row(50.0), row(40.0)])["generated_tps"] == 40.0  # even: the lower middle one
    failed = {"method": "python-engine", "workers": 4, "skipped": "failed: HTTP 500"}
    m = report.median_run([row(50.0), failed])
    assert m["generated_tps"] == 50.0 and "1 of 2 repeats failed: failed: HTTP 500" in m["notes"]
    assert report.median_run([failed, failed]) == failed
    assert report.median_run([row(50.0)]) == row(50.0)  # one run: reported as it is


def test_decode_bytes_count_the_output_matrix_once() -> None:
    tied = {"token_embd.weight": (100, 50), "blk.0.ffn_up.weight": (40, 80)}
    untied = {**tied, "output.weight": (100, 50)}
    assert hardware.decode_bytes_per_token(tied) == 140  # the embedding is the output matrix: read whole
    assert hardware.decode_bytes_per_token(untied) == 140  # only one row of the input embedding is read


def test_the_roofline_is_the_median_bandwidth_and_the_decode_fraction_is_given_by_round() -> None:
    roof = hardware.roofline([30.0, 50.0, 40.0], 4 * 10**9, threads=2, mib=64)
    assert roof["bandwidth_gbs"] == 40.0 and roof["tokens_per_s"] == 10.0 and roof["bandwidth_gbs_range"] == [30, 50]
    assert roof["bandwidth_gbs_measured"] == [30.0, 50.0, 40.0]  # in the order taken

    def run(t_end: float) -> Run:  # 9 tokens, the first at 1 s: the other 8 decoded in t_end - 1 s
        return Run("llama-cpp", 1, records=[{"t_start": 0.0, "t_first": 1.0, "t_end": t_end, "prompt_tokens": 4,
                                              "completion_tokens": 9}])

    rows = [report.summarize(run(t), mean_dag_tokens=5.0, roofline_tps=roof["tokens_per_s"]) for t in (2.0, 1.8, 2.6)]
    assert [r["decode_roofline_fraction"] for r in rows] == [0.8, 1.0, 0.5]  # 8, 10 and 5 tok/s over 10
    r = report.ratios([report.median_run(rows)])["single_stream_decode_vs_roofline"]
    assert r["ratio"] == 0.8 and r["rounds"] == [0.8, 1.0, 0.5]  # the median run by tokens/s, then every round
    assert r["met"] is False and r["within_noise"] is True
    md = report.markdown({"model": {"name": "x", "gguf": "x.gguf", "size_mb": 1, "n_params": 1e6},
                          "workload": {"requests": 1, "prompt_tokens": [4], "max_tokens": 9, "mean_dag_tokens": 5},
                          "machine": {"cpu": "c", "cores": 2, "memory_gib": 1, "load_average": [0, 0, 0]},
                          "threads": 2, "roofline": roof, "ratios": {}, "results": []})
    assert "memory bandwidth 40.0 GB/s (measured; the median of 3, 30.0-50.0)" in md


def test_bandwidth_is_measured() -> None:
    gbs = hardware.measure_bandwidth(1, mib=64, repeats=2)
    assert 0.1 < gbs < 10_000


def test_shapes_are_the_real_architectures() -> None:
    s = shapes.SHAPES["qwen2.5-coder-1.5b"]
    assert (s.hidden_size, s.num_hidden_layers, s.num_attention_heads, s.num_key_value_heads, s.intermediate_size,
            s.vocab_size) == (1536, 28, 12, 2, 8960, 151936)
    assert shapes.parse_shape("shape:qwen2.5-coder-0.5b") == "qwen2.5-coder-0.5b"
    assert shapes.parse_shape("models/x.gguf") is None
    with pytest.raises(UserError, match="unknown model shape 'qwen9'"):
        shapes.parse_shape("shape:qwen9")


def test_a_shape_gguf_has_the_full_vocabulary_and_its_tensor_sizes(request: pytest.FixtureRequest) -> None:
    """A random-weights model of a given shape (here a small one): the tokenizer's vocabulary is filled up to the
    shape's with word tokens that no merge produces, so the embedding and output matrices have the real size and
    every token a random model samples is text (~10 s once)."""
    from transformers import AutoTokenizer

    from airflow_net.serve.engine import Engine, SamplingParams

    shape = shapes.Shape(256, 2, 4, 2, 512, 1536, False, 2048)
    root = Path(request.config.cache.mkdir(f"airflow-net-shape-test-v{shapes.BUILD_VERSION}"))
    hf, gguf = shapes.build_shape_at(shape, root, "Q8_0", llama_cpp_dir=ROOT / "third_party" / "llama.cpp",
                                     tokenizer_vocab=1000)
    tok = AutoTokenizer.from_pretrained(hf)
    assert len(tok) == 1536 and max(tok("with DAG('etl') as dag: t1 >> t2")["input_ids"]) < 1000
    with Engine(gguf, n_parallel=1, n_ctx=256, n_threads=1) as e:
        assert e.n_vocab == 1536
        out = e.generate_many(["def load():"], SamplingParams(max_tokens=12, ignore_eos=True))[0]
        assert len(out.text) >= 12  # every sampled token decodes to text
    tensors = hardware.gguf_tensors(gguf, ROOT / "third_party" / "llama.cpp")
    assert tensors["token_embd.weight"][1] == tensors["output.weight"][1] == 1536 * 256
    assert tensors["blk.0.ffn_up.weight"][1] == 256 * 512


def write_split(path: Path, n: int = 3) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rows = [{"uid": f"u{i}", "variant": "terse", "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"A daily DAG {i} that copies orders from Postgres to S3."},
        {"role": "assistant", "content": "```python\nfrom airflow import DAG\n" + "x = 1\n" * (5 + i) + "```"}]}
        for i in range(n)]
    (path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_workload_is_rendered_with_the_models_template(tiny_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    gguf = tiny_gguf(tiny_dir, "Q8_0")
    w = build_workload(gguf, write_split(tmp_path / "sft"), n_requests=2, max_tokens=8, n_ctx=512, seed=1)
    assert len(w.prompts) == 2 and all(p.startswith("<|im_start|>system") for p in w.prompts)
    assert all(p.endswith("<|im_start|>assistant\n") for p in w.prompts)
    assert all(n > 10 for n in w.prompt_tokens) and w.mean_dag_tokens > 5 and w.eog_tokens
    assert w.requests() == [0, 1]  # every run sends each prompt once
    # distinct prompts, and the warm-up is none of them: no request can find its own prompt in a cache
    assert len({*w.prompts, w.warmup}) == 3 and w.warmup.startswith("<|im_start|>system")
    with pytest.raises(UserError, match="lower bench.requests to at most 2"):
        build_workload(gguf, tmp_path / "sft", n_requests=3, max_tokens=8, n_ctx=512, seed=1)
    with pytest.raises(UserError, match="does not fit bench.n_ctx"):
        build_workload(gguf, tmp_path / "sft", n_requests=2, max_tokens=8, n_ctx=64, seed=1)
    with pytest.raises(UserError, match="run `dvc repro prepare`"):
        build_workload(gguf, tmp_path / "missing", n_requests=2, max_tokens=8, n_ctx=512, seed=1)


def test_bench_params_are_validated() -> None:
    with pytest.raises(ValueError, match="workers must be distinct"):
        BenchParams(workers=[1, 1])
    with pytest.raises(ValueError):
        BenchParams(methods=["vllm"])
    assert BenchParams(workers=[4, 1]).workers == [1, 4]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_every_method_does_the_same_work(tiny_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """A small run of the benchmark: every method generates exactly max_tokens per request, the outputs are
    written, and the report names each method and the ratios it could compute (~60 s)."""
    from airflow_net.bench.run import run_bench
    from airflow_net.serve.llama_server import find_llama_server

    methods = ["transformers-fp32", "llama-cpp", "processes", "llama-cpp-server", "python-engine"]
    try:
        find_llama_server()
        methods.append("llama-server")
    except UserError:
        pass
    gguf = tiny_gguf(tiny_dir, "Q8_0")
    params = BenchParams(model=str(gguf), hf_model=str(gguf.parent / "hf"), methods=methods, workers=[1, 2],
                         requests=2, repeats=2, max_tokens=8, n_ctx=512, bandwidth_mib=64)
    out = tmp_path / "out"
    bench = run_bench(params, data_dir=write_split(tmp_path / "sft"), metrics_path=out / "bench.json",
                      plots_dir=out / "plots", out_dir=out / "report", llama_cpp_dir=ROOT / "third_party" / "llama.cpp")
    rows = {(r["method"], r["workers"]): r for r in bench["results"]}
    for m in methods:
        for w in (1, 2):
            r = rows[(m, w)]
            if m == "llama-cpp" and w == 2:
                assert r["skipped"].startswith("one sequence")
                continue
            assert "skipped" not in r, r
            # the same two requests at every number of workers; EOS ignored everywhere
            assert r["requests"] == 2 and r["generated_tokens"] == 16, r
            assert r["prompt_tokens"] == sum(bench["workload"]["prompt_tokens"]), r
            assert len(r["repeats_tps"]) == 2 and r["generated_tps"] == min(r["repeats_tps"]), r
            assert r["ttft_p50"] <= r["latency_p50"] and r["peak_rss_mb"] > 10
    assert bench["roofline"]["tokens_per_s"] > 0 and "python_engine_x4_vs_x1" not in bench["ratios"]
    # measured at the start and before each method's runs in every round; every run against their median
    assert len(bench["roofline"]["bandwidth_gbs_measured"]) == 1 + 2 * len(methods)
    assert all(r["roofline_fraction"] == round(r["generated_tps"] / bench["roofline"]["tokens_per_s"], 3)
               for r in rows.values() if not r.get("skipped"))
    assert "llama_cpp_vs_transformers" in bench["ratios"]
    assert json.loads((out / "bench.json").read_text())["results"] == bench["results"]
    for f in ("plots/bench_throughput.csv", "plots/bench_latency.csv", "report/throughput.png", "report/latency.png",
              "report/summary.md"):
        assert (out / f).stat().st_size > 100, f
    summary = (out / "report" / "summary.md").read_text()
    assert all(f"| {m} | 1 |" in summary for m in methods)
