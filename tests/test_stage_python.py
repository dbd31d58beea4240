"""tools/python: the interpreter behind every stage command, found without an activated shell (issue 13).

The README drives the pipeline as `.venv/bin/dvc repro` from a plain shell; a queued `dvc exp run` runs in a
copy of the repository under .dvc/tmp/exps; Colab has no .venv at all. Each case either finds the project's
Python or stops with one line that says what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = Path(sys.executable).parent.parent  # the project's environment (.venv in a `make install` checkout)
WHERE = "import sys, airflow_net; print(sys.executable); print(airflow_net.__file__)"


@pytest.fixture(scope="module")
def bare_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python that cannot import the project (a new venv without pip): what a plain shell may find first."""
    d = tmp_path_factory.mktemp("bare")
    venv.create(d, with_pip=False, symlinks=True)
    return d / "bin"


def launcher_in(root: Path) -> Path:
    (root / "tools").mkdir(parents=True, exist_ok=True)
    dest = root / "tools" / "python"
    shutil.copy2(ROOT / "tools" / "python", dest)
    return dest


def plain_env(bare_bin: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "AIRFLOW_NET_PYTHON")}
    return env | {"PATH": f"{bare_bin}{os.pathsep}/usr/bin{os.pathsep}/bin"} | extra


def test_the_repository_venv_is_used_from_a_shell_that_never_activated_it(tmp_path: Path, bare_bin: Path) -> None:
    repo = tmp_path / "repo"
    tool = launcher_in(repo)
    (repo / ".venv").symlink_to(ENV_PREFIX)
    out = subprocess.run([str(tool), "-c", WHERE], env=plain_env(bare_bin), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == str(repo / ".venv" / "bin" / Path(sys.executable).name)


def test_a_queued_experiment_copy_uses_the_venv_of_the_repository_around_it(tmp_path: Path, bare_bin: Path) -> None:
    (tmp_path / ".venv").symlink_to(ENV_PREFIX)
    tool = launcher_in(tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc123")
    out = subprocess.run([str(tool), "-c", WHERE], env=plain_env(bare_bin), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(str(tmp_path / ".venv"))


def test_airflow_net_python_and_an_activated_environment_are_honoured(tmp_path: Path, bare_bin: Path) -> None:
    tool = launcher_in(tmp_path / "repo")  # no .venv: Colab, conda, an environment activated by hand
    env = plain_env(bare_bin, AIRFLOW_NET_PYTHON=sys.executable)
    out = subprocess.run([str(tool), "-c", WHERE], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.splitlines()[0] == sys.executable, out.stderr
    env = plain_env(bare_bin) | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{bare_bin}{os.pathsep}/usr/bin"}
    out = subprocess.run([str(tool), "-c", WHERE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_without_the_project_installed_the_stage_stops_in_one_line(tmp_path: Path, bare_bin: Path) -> None:
    tool = launcher_in(tmp_path / "repo")
    out = subprocess.run([str(tool), "-c", "print('ran')"], env=plain_env(bare_bin), capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no Python that can import the project"), out.stderr
    assert str(bare_bin) in lines[0] and "make install" in lines[0]


@pytest.mark.integration
def test_dvc_repro_through_the_venv_dvc_from_a_plain_shell(tmp_path: Path, bare_bin: Path) -> None:
    """`.venv/bin/dvc repro corpus` in a clone: runs with the venv present, one line without it."""
    dvc = Path(sys.executable).with_name("dvc")
    repo = tmp_path / "repo"
    for rel in ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", "tools/python"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("n_dags: 2000", "n_dags: 20"))
    env = plain_env(bare_bin, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                    GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([str(dvc), "config", "--local", "core.site_cache_dir", str(tmp_path / "site")], cwd=repo, check=True, env=env)

    failed = subprocess.run([str(dvc), "repro", "corpus"], cwd=repo, env=env, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "error: no Python that can import the project" in failed.stdout + failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr

    (repo / ".venv").symlink_to(ENV_PREFIX)
    env_src = env | {"PYTHONPATH": str(repo / "src")}  # the clone's code, as in the end-to-end test
    ok = subprocess.run([str(dvc), "repro", "corpus"], cwd=repo, env=env_src, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-4000:]
    assert (repo / "data" / "corpus" / "dags.jsonl").is_file()
