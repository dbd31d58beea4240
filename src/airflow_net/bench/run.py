"""The benchmark, end to end: resolve the model, build the workload, measure the machine, run every method at
every number of workers, and write metrics/bench.json, the plot CSVs, PNG charts and a Markdown summary."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from airflow_net.bench import hardware, report, shapes
from airflow_net.bench.methods import Run, Setup, run_method
from airflow_net.bench.workload import build_workload
from airflow_net.params import BenchParams
from airflow_net.serve.generation import exported_gguf
from airflow_net.utils import UserError, banner, versions, write_json, write_text

log = logging.getLogger(__name__)


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit in the main thread, so a stopped benchmark still stops the servers it started
    and removes its scratch folder (the finally blocks run). For entry points only."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def resolve_model(model: str, quant: str, *, models_dir: Path, base_dir: Path, cache_dir: Path,
                  llama_cpp_dir: Path, hf_model: str | None = None) -> tuple[Path, Path | None, bool]:
    """(GGUF, transformers-format folder or None, random weights?) for ``bench.model``."""
    if shapes.parse_shape(model):
        hf, gguf = shapes.build_shape(model, quant, cache_dir=cache_dir, llama_cpp_dir=llama_cpp_dir)
        return gguf, hf, True
    if model in ("base", "finetuned"):
        gguf = exported_gguf(models_dir, model, quantized=True)
        # the fine-tuned model has the base model's shapes: the same transformers model times the baseline
        hf = base_dir if (base_dir / "config.json").is_file() else None
        return gguf, hf, False
    path = Path(model)
    if path.suffix != ".gguf" or not path.is_file():
        raise UserError(f"bench.model '{model}': expected base, finetuned, shape:NAME ({', '.join(shapes.SHAPES)}) "
                        "or a path to a .gguf file")
    return path, Path(hf_model) if hf_model else None, False


def run_bench(
    params: BenchParams,
    *,
    data_dir: Path,
    metrics_path: Path,
    plots_dir: Path,
    out_dir: Path,
    models_dir: Path = Path("models/gguf"),
    base_dir: Path = Path("models/base"),
    cache_dir: Path = Path(".cache/shapes"),
    llama_cpp_dir: Path = Path("third_party/llama.cpp"),
    llama_server: Path | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    banner("model")
    gguf, hf_dir, random_weights = resolve_model(params.model, params.quant, models_dir=models_dir,
                                                 base_dir=base_dir, cache_dir=cache_dir, llama_cpp_dir=llama_cpp_dir,
                                                 hf_model=params.hf_model)
    threads = params.n_threads or os.cpu_count() or 1
    workload = build_workload(gguf, data_dir, n_requests=params.requests, max_tokens=params.max_tokens,
                              n_ctx=params.n_ctx, seed=seed)
    tensors = hardware.gguf_tensors(gguf, llama_cpp_dir)
    machine = hardware.machine_info()
    log.info("%s: %d prompts of %d-%d tokens, %d generated each; machine load %s", gguf.name, len(workload.prompts),
             min(workload.prompt_tokens), max(workload.prompt_tokens), workload.max_tokens, machine["load_average"])
    if machine["load_average"][0] > 0.5 * (machine["cores"] or 1):
        log.warning("the machine is busy (load %.1f on %d cores): throughput numbers will be low and noisy",
                    machine["load_average"][0], machine["cores"])

    banner("memory bandwidth")
    per_token = hardware.decode_bytes_per_token(tensors)
    # Measured here and again before each method's runs; the roofline is the median of them all. On a shared VM
    # one measurement can stray by a quarter (25.0 and 42.3 GB/s among eight of 32-36 in one 1.5B run) while
    # the decode speeds around it hold within 4%, so one figure, or each run paired with the measurement just
    # before it, would move every fraction by that much; the median of many does not.
    bandwidths = [hardware.measure_bandwidth(threads, mib=params.bandwidth_mib)]
    log.info("bandwidth %.1f GB/s, %.0f MB per decode step: roofline %.1f tokens/s", bandwidths[0],
             per_token / 1e6, bandwidths[0] * 1e9 / per_token)

    server = None
    if "llama-server" in params.methods:
        from airflow_net.serve.llama_server import find_llama_server

        try:
            server = find_llama_server(str(llama_server) if llama_server else None)
        except UserError as exc:
            log.warning("%s: the llama-server rows are skipped", exc)

    work = Path(tempfile.mkdtemp(prefix="airflow-net-bench-"))
    t_start = time.time()
    try:
        wpath = work / "workload.json"
        workload.save(wpath)
        setup = Setup(gguf=gguf, hf_dir=hf_dir, workload=workload, workload_path=wpath, threads=threads,
                      llama_server=server, timeout_s=params.timeout_s)
        # Repeats go round every method before the next: a machine that slows down for a while slows every
        # method's run in that round, not all the runs of one method. Each round starts one method later than
        # the one before (A B C, B C A, ...), so no method always runs first or always follows the same one.
        runs: dict[tuple[str, int], list[Run | dict[str, Any]]] = {}
        for rep in range(params.repeats):
            k = rep % len(params.methods)
            for method in [*params.methods[k:], *params.methods[:k]]:
                banner(method if params.repeats == 1 else f"{method} (round {rep + 1} of {params.repeats})")
                bandwidths.append(hardware.measure_bandwidth(threads, mib=params.bandwidth_mib))
                log.info("bandwidth %.1f GB/s", bandwidths[-1])
                for workers in params.workers:
                    try:
                        run: Run | dict[str, Any] = run_method(setup, method, workers)
                    except Exception as exc:  # noqa: BLE001  (one method failing must not lose the others' numbers)
                        log.error("%s x%d failed: %s", method, workers, exc)
                        run = {"method": method, "workers": workers, "skipped": f"failed: {exc}"[:500]}
                    runs.setdefault((method, workers), []).append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    roofline = hardware.roofline(bandwidths, per_token, threads=threads, mib=params.bandwidth_mib)
    log.info("bandwidth %.1f GB/s (the median of %d measurements, %.1f-%.1f): roofline %.1f tokens/s",
             roofline["bandwidth_gbs"], len(bandwidths), *roofline["bandwidth_gbs_range"], roofline["tokens_per_s"])
    rows: list[dict[str, Any]] = [
        report.median_run([r if isinstance(r, dict) else
                           report.summarize(r, mean_dag_tokens=workload.mean_dag_tokens,
                                            roofline_tps=roofline["tokens_per_s"]) for r in runs[(m, w)]])
        for m in params.methods for w in params.workers]
    size = sum(b for b, _ in tensors.values())
    bench = {
        "model": {"name": params.model, "gguf": str(gguf), "hf_dir": str(hf_dir) if hf_dir else None,
                  "random_weights": random_weights, "size_mb": round(size / 1e6, 1),
                  "n_params": sum(n for _, n in tensors.values()), **({"shape": shapes.describe_shape(shapes.parse_shape(params.model))}
                                                  if random_weights else {})},
        "workload": {"requests": len(workload.prompts), "prompt_tokens": workload.prompt_tokens,
                     "max_tokens": workload.max_tokens, "repeats": params.repeats,
                     "mean_dag_tokens": workload.mean_dag_tokens, "n_ctx": workload.n_ctx},
        "machine": machine,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "threads": threads,
        "roofline": roofline,
        "ratios": report.ratios(rows),
        "results": rows,
        "seconds": round(time.time() - t_start, 1),
        "params": params.model_dump(),
        "versions": versions("llama_cpp_python", "torch", "transformers", "numpy"),
    }
    if random_weights:
        bench["note"] = ("random weights: the model has a real architecture's sizes, so speeds are realistic; "
                         "its outputs are meaningless")
    busy = report.contaminated(bench)
    bench["contaminated_runs"] = busy
    if busy:
        log.warning("other processes used more than 5%% of the CPU during %s: rerun those on a quiet machine",
                    ", ".join(busy))
    banner("report")
    write_json(metrics_path, bench)
    report.write_csvs(rows, plots_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report.write_charts(rows, out_dir, roofline_tps=roofline["tokens_per_s"], title=params.model)
    write_text(out_dir / "summary.md", report.markdown(bench))
    for name, r in bench["ratios"].items():
        rounds = f" [rounds: {', '.join(f'{x:.2f}' for x in r['rounds'])}]" if r.get("rounds") else ""
        log.info("%s: %.2fx%s%s", name, r["ratio"], rounds,
                 f" (target {r['target']}x: {'met' if r['met'] else 'NOT met'})" if "target" in r else "")
    log.info("wrote %s, %s/bench_*.csv and %s/ (summary.md, throughput.png, latency.png)", metrics_path, plots_dir,
             out_dir)
    return bench

