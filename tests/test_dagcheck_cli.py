"""`airflow-net validate` / `python -m airflow_net.dagcheck`: inputs, formats, exit codes, the lint tier."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from airflow_net.dagcheck.cli import main
from airflow_net.dagcheck.validate import summarize, validate_sources

GOOD = '''
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator

with DAG("good", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1), catchup=False) as dag:
    BashOperator(task_id="hello", bash_command="echo hello")
'''
BAD = GOOD.replace('schedule="@daily"', 'schedule="not a cron"').replace('task_id="hello"', 'task_id="hello", retires=2')


@pytest.fixture
def files(tmp_path):
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "good.py").write_text(GOOD)
    (tmp_path / "dags" / "bad.py").write_text(BAD)
    gen = tmp_path / "generated.jsonl"
    gen.write_text(json.dumps({"id": "g1", "code": GOOD}) + "\n" + json.dumps({"id": "g2", "code": "def (:"}) + "\n")
    return tmp_path


def test_exit_codes_and_text(files, capsys):
    assert main([str(files / "dags" / "good.py"), "--no-lint"]) == 0
    assert main([str(files / "dags"), "--no-lint"]) == 1
    out = capsys.readouterr().out
    assert "bad.py:" in out and "DC401" in out and "DC201" in out and "hint:" in out
    assert "2 file(s) checked: 1 ok, 1 with errors" in out
    assert main([str(files / "dags"), "--no-lint", "--exit-zero"]) == 0
    assert main([str(files / "missing.py")]) == 2


def test_json_and_csv_outputs(files, capsys):
    assert main([str(files / "generated.jsonl"), "--no-lint", "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [f["filename"].rsplit(":", 1)[1] for f in data["files"]] == ["g1", "g2"]
    assert data["files"][1]["findings"][0]["code"] == "DC001"
    assert data["summary"]["n"] == 2 and data["summary"]["ok"] == 1
    out_csv = files / "report.csv"
    assert main([str(files / "dags"), "--no-lint", "--csv", str(out_csv), "--output", str(files / "r.txt")]) == 1
    rows = list(csv.DictReader(out_csv.open()))
    assert {r["filename"].rsplit("/", 1)[1]: r["ok"] for r in rows} == {"bad.py": "0", "good.py": "1"}
    bad = next(r for r in rows if r["filename"].endswith("bad.py"))
    assert set(bad["codes"].split()) >= {"DC201", "DC401"} and bad["tier_static"] == "fail"
    assert main([str(files / "dags"), "--no-lint", "--format", "csv"]) == 1
    assert "filename,ok,tier_parse" in capsys.readouterr().out


def test_conn_ids_and_airflow_version(files, capsys):
    src = GOOD.replace('bash_command="echo hello"', 'bash_command="x", ssh_conn_id="prod"')
    (files / "c.py").write_text(src)
    assert main([str(files / "c.py"), "--no-lint", "--conn-ids", "dev,staging"]) == 1
    assert "DC402" in capsys.readouterr().out
    old = GOOD.replace("from airflow.providers.standard.operators.bash import BashOperator",
                       "from airflow.operators.bash_operator import BashOperator")
    (files / "old.py").write_text(old)
    assert main([str(files / "old.py"), "--no-lint", "--airflow", "3"]) == 1
    assert "DC104" in capsys.readouterr().out
    assert main([str(files / "old.py"), "--no-lint", "--airflow", "2"]) == 1  # airflow.sdk is not in 2.10
    assert "DC103" in capsys.readouterr().out


def test_list_codes(capsys):
    assert main(["--list-codes"]) == 0
    out = capsys.readouterr().out
    assert "DC101" in out and "undefined-name" in out and "AIR" in out


def test_lint_tier_maps_ruff_airflow_rules():
    src = GOOD.replace('schedule="@daily"', 'schedule_interval="@daily"')
    [rep] = validate_sources({"lint.py": src}, airflow=3, lint=True)
    lint = [f for f in rep.findings if f.tier == "lint"]
    assert any(f.code == "AIR301" and f.severity == "error" and f.line == 6 for f in lint), lint
    assert rep.tiers["lint"] == "fail"
    [rep2] = validate_sources({"lint.py": src}, airflow=2, lint=True)
    assert rep2.tiers["lint"] == "pass"  # removed in 3 is advice when the target is 2
    s = summarize([rep, rep2])
    assert s["n"] == 2 and s["files_with_code"]["AIR301"] == 2 and s["files_with_error_code"]["AIR301"] == 1


def test_module_entry_point(files):
    proc = subprocess.run([sys.executable, "-m", "airflow_net.dagcheck", str(files / "dags" / "bad.py"),
                           "--format", "json", "--no-lint"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert json.load(io.StringIO(proc.stdout))["summary"]["ok"] == 0


def test_fix_rewrites_the_py_files_it_can_fix_and_reports_the_rest(files, capsys):
    forgot = files / "dags" / "forgot.py"
    forgot.write_text(GOOD.replace("from airflow.providers.standard.operators.bash import BashOperator\n", ""))
    bad_before = (files / "dags" / "bad.py").read_text()
    assert main([str(files / "dags"), "--no-lint"]) == 1  # forgot.py: DC102; bad.py: its own errors
    capsys.readouterr()
    assert main([str(files / "dags"), str(files / "generated.jsonl"), "--no-lint", "--fix"]) == 1
    out, err = capsys.readouterr()
    assert "fixed" in err and "forgot.py" in err and "import BashOperator" in err and "1 of 5 files" in err
    assert "import BashOperator" in forgot.read_text()
    assert (files / "dags" / "bad.py").read_text() == bad_before  # nothing dagcheck can name: untouched
    assert "forgot.py" not in [line.split(":")[0].rsplit("/", 1)[-1] for line in out.splitlines() if "DC102" in line]
    assert main([str(forgot), "--no-lint"]) == 0
