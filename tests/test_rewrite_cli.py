import io
import re

import pytest

from airflow_net.cli import main
from tests.support.tiny_t5 import LINES, build_tiny_t5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(build_tiny_t5(tmp_path_factory.mktemp("t5") / "m"))


def test_one_query_prints_text_and_ms(folder, capsys):
    with pytest.raises(SystemExit) as e:
        main(["rewrite", "--model", folder, "--runtime", "torch-fp32", "--max-new-tokens", "4", LINES[0]])
    assert e.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and re.search(r"\t\d+\.\d ms$", lines[0])


def test_loop_reads_stdin_until_eof(folder, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{LINES[0]}\n\n{LINES[1]}\n"))
    with pytest.raises(SystemExit):
        main(["rewrite", "--model", folder, "--runtime", "torch-fp32", "--max-new-tokens", "4"])
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_missing_model_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["rewrite", "--model", str(tmp_path), "--runtime", "torch-fp32", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "config.json" in err and err.count("\n") == 1


def test_default_runtime_without_its_export_says_what_to_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["rewrite", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "rewrite_export" in err and "ct2-int8" in err and err.count("\n") == 1
