"""The whole pipeline, end to end, on the tiny params (tests/configs/tiny.yaml) in a scratch clone.

One `dvc repro` runs every stage for real (corpus → ... → report); the tests then assert behaviour:
losses went down, LoRA weights changed, the GGUF answers through its chat template, both models are
evaluated, MLflow got the runs, and changing one knob invalidates exactly the stages that depend on it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The project's environment, called by path from a shell that never activated it (README: `.venv/bin/dvc repro`).
ENV_BIN = Path(sys.executable).parent
DVC = str(ENV_BIN / "dvc")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def scratch_clone(dest: Path) -> None:
    """The project's files as a fresh clone would have them (tracked + new, not ignored), tiny params."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("data/", "models/", "metrics/", "plots/", "reports/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for p in ("dvc.lock",):
        (dest / p).unlink(missing_ok=True)
    (dest / "third_party").symlink_to(ROOT / "third_party")
    shutil.copy(ROOT / "tests" / "configs" / "tiny.yaml", dest / "params.yaml")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    if not (ROOT / "third_party" / "llama.cpp" / "convert_hf_to_gguf.py").is_file():
        pytest.fail("llama.cpp's converter is missing: run `make install` (it extracts it into third_party/)")
    base = tmp_path_factory.mktemp("e2e")
    repo = base / "repo"
    repo.mkdir()
    scratch_clone(repo)
    # PATH without the project's environment: the stage commands must find it themselves (tools/python).
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() != ENV_BIN.resolve())
    env = {
        **{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
        "PATH": path,
        "PYTHONPATH": str(repo / "src"),  # the clone's own code, not the editable install
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "AIRFLOW_NET_EXPERIMENT": "e2e",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run([DVC, "config", "--local", "core.site_cache_dir", str(base / "site-cache")], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "scratch"], repo, env)
    (repo / ".venv").symlink_to(ENV_BIN.parent)  # as `make install` leaves it; git ignores it
    run([DVC, "repro"], repo, env)
    return repo, env


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_every_stage_wrote_its_outputs(pipeline) -> None:
    repo, _ = pipeline
    for path in ["data/corpus/dags.jsonl", "data/instructions/pairs.jsonl", "data/sft/train.jsonl", "data/sft/test.jsonl",
                 "models/base/config.json", "models/adapter/adapter_config.json", "models/gguf/meta.json",
                 "data/generated/base.jsonl", "data/generated/finetuned.jsonl", "reports/eval/per_dag.csv",
                 "reports/summary/README.md", "dvc.lock", "data/rewrite/test.jsonl", "models/rewrite/base/spiece.model",
                 "models/rewrite/finetuned/model.safetensors", "models/rewrite/finetuned/meta.json",
                 "models/rewrite/finetuned/spiece.model",
                 "reports/rewrite/per_pair.csv"]:
        assert (repo / path).exists(), path
    pairs = [json.loads(x) for x in (repo / "data/instructions/pairs.jsonl").read_text().splitlines()]
    dags = (repo / "data/corpus/dags.jsonl").read_text().splitlines()
    assert len(pairs) == 4 * len(dags)  # three described styles + the canonical request


def test_rewrite_stages_compare_base_and_finetuned(pipeline) -> None:
    repo, _ = pipeline
    m = json.loads((repo / "metrics/rewrite_eval.json").read_text())
    for which in ("base", "finetuned"):
        assert {"eval_loss", "rougeL", "exact_match", "structural_f1"} <= set(m[which])
        assert 0.0 <= m[which]["rougeL"] <= 1.0
    assert m["gain"]["eval_loss"] == round(m["finetuned"]["eval_loss"] - m["base"]["eval_loss"], 4)
    assert m["finetuned"]["eval_loss"] < m["base"]["eval_loss"]  # a few steps already lower the loss
    test = [json.loads(x) for x in (repo / "data/rewrite/test.jsonl").read_text().splitlines()]
    assert test and all({"query", "rewrite", "spec"} <= set(r) for r in test)
    cfg = json.loads((repo / "models/rewrite/finetuned/config.json").read_text())
    assert cfg["tie_word_embeddings"] is False and cfg["feed_forward_proj"] == "gated-gelu"


def test_rewrite_runtimes_exported_compared_and_benchmarked(pipeline) -> None:
    repo, _ = pipeline
    m = json.loads((repo / "metrics/rewrite_export.json").read_text())
    assert set(m["runtimes"]) == {"torch-fp32", "torch-int8", "ct2-int8", "gguf-q8_0"} and m["skipped"] == 0
    assert m["runtimes"]["torch-fp32"]["agree_torch_fp32"] == 1.0
    outputs = [json.loads(x) for x in (repo / "models/rewrite/runtimes/outputs.jsonl").read_text().splitlines()]
    assert len(outputs) == m["n"] and all({"torch-fp32", "ct2-int8", "gguf-q8_0", "gold"} <= set(r) for r in outputs)
    b = json.loads((repo / "metrics/rewrite_bench.json").read_text())
    rows = {r["runtime"]: r for r in b["rows"]}
    assert set(rows) == {"torch-fp32", "torch-int8", "ct2-int8", "gguf-q8_0"} and all(r["p50"] <= r["p99"] for r in rows.values())
    assert "finetuned_served" in json.loads((repo / "metrics/rewrite_eval.json").read_text())
    assert rows["torch-fp32"]["cold_start_ms"] > 0 and b["fastest"]["runtime"] in rows
    assert "latency_cdf.png" in {p.name for p in (repo / "reports/rewrite_bench").iterdir()}


def test_every_strategy_ran_on_the_same_requests(pipeline) -> None:
    repo, _ = pipeline
    names = ["direct", "best_of_n", "repair", "templated", "reformulated"]
    answers = {}
    for name in names:
        m = json.loads((repo / f"metrics/strategies/{name}.json").read_text())
        assert m["strategy"] == name and m["describer"]["n"] == m["person"]["n"] == 2
        assert 0 <= m["all"]["valid_rate_lo"] <= m["all"]["valid_rate"] <= m["all"]["valid_rate_hi"] <= 1
        rows = [json.loads(x) for x in (repo / f"reports/strategies/{name}/answers.jsonl").read_text().splitlines()]
        if name == "templated":  # strategies.sample_overrides: the shared 2 DAGs first, then a third
            assert m["wider"]["dags"] == 3 and m["wider"]["describer"]["n"] == m["wider"]["person"]["n"] == 3
            assert len(rows) == 6 and [r["group"] for r in rows] == ["describer"] * 3 + ["person"] * 3
            rows = [r for r in rows if r["uid"] in {a for a, _ in answers["direct"]}]
        else:
            assert "wider" not in m
        answers[name] = [(r["uid"], r["group"]) for r in rows]
    assert all(a == answers["direct"] for a in answers.values())
    report = (repo / "reports/summary/README.md").read_text()
    assert "Generation strategies side by side" in report
    assert "Strategies run on more test DAGs" in report and "| templated | person (3) |" in report


def test_quant_sweep_measured_each_type_against_f16(pipeline) -> None:
    repo, _ = pipeline
    m = {t: json.loads((repo / f"metrics/quant_sweep/{t}.json").read_text()) for t in ("F16", "Q4_0")}
    f16, q4 = m["F16"], m["Q4_0"]
    assert f16["kl_mean"] <= 1e-6 and f16["top1_agreement"] == 1.0 and f16["size_vs_reference"] == 1.0
    assert q4["kl_mean"] > 0 and q4["size_mb"] < f16["size_mb"] / 2 and q4["kl_tokens"] == f16["kl_tokens"] > 0
    for x in m.values():
        assert x["requests"] == 2 and x["tokens_per_s"] > 0
        assert 0 <= x["valid_rate_lo"] <= x["valid_rate"] <= x["valid_rate_hi"] <= 1
    uids = {t: [json.loads(x)["uid"] for x in (repo / f"reports/quant_sweep/{t}/answers.jsonl").read_text().splitlines()]
            for t in m}
    assert uids["F16"] == uids["Q4_0"] and len(uids["F16"]) == 2  # the same requests for every type
    summary = (repo / "reports/summary/README.md").read_text()
    assert "## Quantization chosen by measured quality" in summary and "| Q4_0 |" in summary
    assert "Smallest type within F16:" in summary  # F16 is always inside its own intervals (KL 0)


def test_base_never_pretrained_on_val_or_test_dags(pipeline) -> None:
    repo, _ = pipeline
    held_out = set()
    for split in ("val", "test"):
        held_out |= {json.loads(x)["uid"] for x in (repo / f"data/sft/{split}.jsonl").read_text().splitlines()}
    dags = [json.loads(x) for x in (repo / "data/corpus/dags.jsonl").read_text().splitlines()]
    base = json.loads((repo / "metrics/base.json").read_text())
    assert held_out and base["held_out_dags"] == len(held_out)
    assert base["n_dags"] == len(dags) - len(held_out)


def test_pretraining_and_sft_loss_went_down(pipeline) -> None:
    repo, _ = pipeline
    pre = [float(r["loss"]) for r in read_csv(repo / "plots/pretrain_loss.csv")]
    assert len(pre) >= 10 and sum(pre[-3:]) / 3 < sum(pre[:3]) / 3 * 0.8, pre
    # SFT: the val loss before training (eval_on_start) against after. At 2 rows per step a single step's train
    # loss is too noisy to compare first with last; the val split is the same conversations every time.
    rows = read_csv(repo / "plots/train_loss.csv")
    val = [float(r["eval_loss"]) for r in rows if r.get("eval_loss")]
    assert len(val) >= 2 and rows[0]["step"] == "0" and val[-1] < val[0] - 0.05, val
    sft = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    assert len(sft) >= 3 and min(sft[1:]) < sft[0], sft


def test_lora_weights_changed(pipeline) -> None:
    from safetensors.numpy import load_file

    repo, _ = pipeline
    tensors = load_file(repo / "models/adapter/adapter_model.safetensors")
    lora_b = {k: v for k, v in tensors.items() if "lora_B" in k}
    assert lora_b, sorted(tensors)[:5]
    # PEFT initialises lora_B to zeros: any non-zero value was learned.
    assert all(abs(v).max() > 0 for v in lora_b.values())


def test_gguf_answers_through_its_chat_template(pipeline) -> None:
    from llama_cpp import Llama

    repo, _ = pipeline
    meta = json.loads((repo / "models/gguf/meta.json").read_text())
    path = repo / "models/gguf" / meta["files"]["finetuned_quantized"]
    llm = Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False)
    assert "im_start" in llm.metadata.get("tokenizer.chat_template", "")
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "a daily DAG"}], max_tokens=8, temperature=0)
    assert out["choices"][0]["message"]["content"] is not None
    assert out["usage"]["completion_tokens"] >= 1


def test_both_models_evaluated(pipeline) -> None:
    repo, _ = pipeline
    ev = json.loads((repo / "metrics/eval.json").read_text())
    for which in ("base", "finetuned"):
        assert ev[which]["n"] == 3
        for key in ("parse_rate", "valid_rate", "structural_f1", "task_f1", "edge_f1", "errors"):
            assert key in ev[which], key
    assert set(ev["gain"]) >= {"valid_rate", "structural_f1"}
    f = ev["finetuned"]
    assert f["valid_rate_lo"] <= f["valid_rate"] <= f["valid_rate_hi"]
    assert {"syntax_error", "truncated", "missing_setup"} <= set(f["error_classes"]) and f["by_variant"]
    assert ev["tests"]["valid_rate"]["test"] == "exact McNemar" and ev["airflow_sample"] is None
    summary = (repo / "reports/summary/README.md").read_text()
    assert "## Error classes" in summary and "## Breakdowns" in summary
    rows = read_csv(repo / "reports/eval/per_dag.csv")
    assert {r["model"] for r in rows} == {"base", "finetuned"} and len(rows) == 6


def test_mlflow_got_the_runs(pipeline, tmp_path: Path) -> None:
    import mlflow

    _, env = pipeline
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    names = {r.info.run_name for r in runs}
    assert {"train", "evaluate"} <= names, names
    train = next(r for r in runs if r.info.run_name == "train")
    assert client.get_metric_history(train.info.run_id, "train_loss")


def test_distill_with_the_tiny_model_as_teacher(pipeline) -> None:
    """Magpie-style distillation driven by the pipeline's own fine-tuned GGUF, through llama.cpp."""
    from airflow_net.data.distill import LlamaTeacher, distill_pairs
    from airflow_net.params import DistillParams

    repo, _ = pipeline
    meta = json.loads((repo / "models/gguf/meta.json").read_text())
    gguf = repo / "models/gguf" / meta["files"]["finetuned_quantized"]
    params = DistillParams(enabled=True, teacher=str(gguf), n_pairs=1, max_attempts=2, instruction_max_tokens=24,
                           answer_max_tokens=48, n_ctx=1024, n_threads=1)
    teacher = LlamaTeacher(gguf, n_ctx=params.n_ctx, n_threads=1, seed=0)
    pairs, metrics = distill_pairs(teacher, params, seed=0)
    assert metrics["attempts"] >= 1 and metrics["teacher"]["file"] == gguf.name
    # A 12-step model rarely writes a valid DAG: whatever it kept must have passed the validator.
    from airflow_net.dagcheck import check_source

    assert all(check_source(p["source"]).ok for p in pairs)


def test_bytecode_and_editor_files_leave_every_stage_up_to_date(pipeline) -> None:
    """A user's shell writes bytecode (CI's sets PYTHONDONTWRITEBYTECODE): importing the library must not make
    the stages that depend on its folders "modified"; nor must an editor's swap file or an OS's litter."""
    repo, env = pipeline
    env_on = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    every_module = ("import importlib, pkgutil, airflow_net\n"
                    "for m in pkgutil.walk_packages(airflow_net.__path__, 'airflow_net.'):\n"
                    "    if not m.name.endswith('.__main__'):\n"  # a command line, not a module to import
                    "        importlib.import_module(m.name)")
    run([sys.executable, "-c", every_module], repo, env_on)
    run([sys.executable, "-m", "compileall", "-q", "stages", "tools"], repo, env_on)
    written = {p.parent.parent.name for p in (repo / "src/airflow_net").rglob("__pycache__/*.pyc")}
    assert {"data", "dagcheck", "models", "export", "serve", "evaluate"} <= written, written
    for litter in ("src/airflow_net/data/.factory.py.swp", "src/airflow_net/models/base.py~", "src/airflow_net/.DS_Store",
                   "stages/.#train.py"):
        (repo / litter).write_text("x")
    assert json.loads(run([DVC, "status", "--json"], repo, env).stdout) == {}


def declared_outs(repo: Path) -> dict[str, str | None]:
    """stage:path -> md5 in dvc.lock of every `outs` entry (metrics and plots hold run facts by design)."""
    import yaml

    pipeline_ = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    paths = {name: {next(iter(o)) if isinstance(o, dict) else o for o in st.get("outs", [])}
             for name, st in pipeline_.items()}
    return {f"{name}:{o['path']}": o.get("md5") for name, st in lock.items() for o in st.get("outs", [])
            if o["path"] in paths.get(name, ())}


# Outputs made of run facts by nature (README, "Reproducibility"): the benchmark's report, and the summary report,
# which renders the metrics files, timings included. Every other out is byte-identical.
RUN_SPECIFIC_OUTS = {"bench:reports/bench", "report:reports/summary", "rewrite_bench:reports/rewrite_bench"}


def test_a_second_run_writes_byte_identical_outputs(pipeline) -> None:
    repo, env = pipeline
    first = declared_outs(repo)
    assert {"corpus:data/corpus", "train:models/adapter", "export:models/gguf", "generate:data/generated"} <= set(first)
    run([DVC, "repro", "--force"], repo, env)
    second = declared_outs(repo)
    changed = sorted(k for k in first if first[k] != second.get(k))
    assert set(changed) <= RUN_SPECIFIC_OUTS, f"outputs that differ between two runs of the same inputs: {changed}"


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def test_changing_rewrite_quant_reruns_only_the_rewrite_runtimes(pipeline) -> None:
    repo, env = pipeline
    assert json.loads(run([DVC, "status", "--json"], repo, env).stdout) == {}
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("torch: [fp32, int8]", "torch: [fp32]"))
    status = json.loads(run([DVC, "status", "--json"], repo, env).stdout)
    assert set(status) == {"rewrite_export", "rewrite_bench"}, status
    proc = run([DVC, "repro"], repo, env)
    # the served runtime's folder (ct2-int8) is unchanged: rewrite_evaluate and the strategies do not rerun;
    # report renders the metrics files, and rewrite_export's changed
    ran = ran_stages(proc.stdout + proc.stderr)
    assert {"rewrite_export", "rewrite_bench"} <= ran <= {"rewrite_export", "rewrite_bench", "report"}, ran
    assert set(json.loads((repo / "metrics/rewrite_export.json").read_text())["runtimes"]) == {
        "torch-fp32", "ct2-int8", "gguf-q8_0"}
    assert json.loads(run([DVC, "status", "--json"], repo, env).stdout) == {}


def test_changing_quant_type_reruns_only_export_and_after(pipeline) -> None:
    """Runs last: it re-quantizes for real and checks which stages ran."""
    repo, env = pipeline
    assert json.loads(run([DVC, "status", "--json"], repo, env).stdout) == {}
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("type: Q8_0", "type: Q4_K_M"))
    status = json.loads(run([DVC, "status", "--json"], repo, env).stdout)
    # dvc status names the stage whose own deps or params changed; the rest follows from the graph.
    assert set(status) == {"export"}, status
    proc = run([DVC, "repro"], repo, env)
    ran = ran_stages(proc.stdout + proc.stderr)
    # report reads only metrics files: it reruns when the new answers change a metric (eval.json's bytes)
    strategies = {f"strategies@{n}" for n in ("direct", "best_of_n", "repair", "templated", "reformulated")}
    assert {"export", "generate", "evaluate", "bench"} <= ran, ran
    assert ran <= {"export", "generate", "evaluate", "report", "bench"} | strategies, ran
    # the sweep reads only the F16 file, which a new quant.type leaves byte-identical: it does not rerun
    assert not any(s.startswith("quant_sweep") for s in ran), ran
    meta = json.loads((repo / "models/gguf/meta.json").read_text())
    assert "Q4_K_M" in meta["files"]["finetuned_quantized"]
    assert json.loads(run([DVC, "status", "--json"], repo, env).stdout) == {}
