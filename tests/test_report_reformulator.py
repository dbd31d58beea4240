"""The report's reformulator section renders the three metrics files and says when a runtime was skipped."""

import json

from airflow_net.report import reformulator_section


def test_section_from_metrics_files(tmp_path):
    (tmp_path / "rewrite_eval.json").write_text(json.dumps({
        "base": {"eval_loss": 3.8, "rougeL": 0.01, "exact_match": 0.0, "structural_f1": 0.0, "parse_rate": 0.0},
        "finetuned": {"eval_loss": 0.2, "rougeL": 0.81, "exact_match": 0.1, "structural_f1": 0.46, "parse_rate": 0.68},
        "finetuned_snapped": {"eval_loss": 0.2, "rougeL": 0.83, "exact_match": 0.16, "structural_f1": 0.53,
                              "parse_rate": 0.72}}))
    (tmp_path / "rewrite_export.json").write_text(json.dumps({"n": 4, "runtimes": {
        "torch-fp32": {"size_bytes": 2e7, "agree_torch_fp32": 1.0, "rougeL": 0.8, "exact_match": 0.1},
        "ct2-int8": {"skipped": "load: No module named 'ctranslate2'"}}}))
    (tmp_path / "rewrite_bench.json").write_text(json.dumps({"max_new_tokens": 24, "rounds": 3, "rows": [
        {"threads": 1, "runtime": "torch-fp32", "p50": 50.0, "p90": 55.0, "p99": 60.0, "p99_over_p50": 1.2,
         "speedup_p50_vs_torch_fp32": 1.0, "cold_start_ms": 3000, "peak_rss_mb": 400},
        {"threads": 1, "runtime": "ct2-int8", "skipped": "x"}], "fastest": {"runtime": "torch-fp32", "threads": 1}}))
    text = "\n".join(reformulator_section(tmp_path))
    assert "| finetuned_snapped | 0.200 | 0.830 | 0.160 | 0.530 | 0.720 |" in text
    assert "| ct2-int8 | skipped: load: No module named 'ctranslate2' |" in text
    assert "| 1 | torch-fp32 | 50.0 | 55.0 | 60.0 | 1.20 | 1.00 | 3000 | 400 |" in text
    assert "Fastest: **torch-fp32** at 1 thread(s)." in text


def test_no_section_without_the_files(tmp_path):
    assert reformulator_section(tmp_path) == []
