"""The airflow tier: the real parse by Airflow's DagBag, in a sandboxed subprocess of a separate virtualenv.

This is the ground truth the static tiers are measured against. The DAG code runs only inside
_runner.py's forked children, in the Airflow environment made by `make airflow-env`, with:
- a scrubbed environment (no inherited variables: no credentials, no proxies) and `python -I -B`;
- a scratch working directory, deleted afterwards; writes anywhere else are refused;
- a wall-clock timeout and a CPU limit per file; an address-space limit (memory);
- no network: a fresh network namespace (`unshare -n`) where the OS allows it, and refused socket calls;
- no new processes (refused fork/exec/spawn), and the file's whole process group killed when it ends.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_net.dagcheck.findings import Finding, make_finding
from airflow_net.utils import UserError

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("_runner.py")
ENV_VAR = "DAGCHECK_AIRFLOW_ENV"  # overrides where the Airflow virtualenvs live


def default_env_root() -> Path:
    """`.airflow-env/` at the repository root (where `make airflow-env` puts it), or $DAGCHECK_AIRFLOW_ENV."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() or (parent / ".airflow-env").is_dir():
            return parent / ".airflow-env"
    return Path.cwd() / ".airflow-env"


def env_python(airflow: int, root: Path | None = None) -> Path:
    return (root or default_env_root()) / str(airflow) / "bin" / "python"


def env_available(airflow: int, root: Path | None = None) -> bool:
    return env_python(airflow, root).is_file()


@functools.cache
def _netns_prefix() -> tuple[str, ...]:
    """`unshare -n` (root) or `unshare -rn` (user namespaces) when the OS allows it, else nothing."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    for flags in (("-n",), ("-r", "-n")):
        try:
            ok = subprocess.run([exe, *flags, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return (exe, *flags)
    log.info("no network namespace available here: the sandbox relies on refused socket calls only")
    return ()


@dataclass
class AirflowResult:
    status: str  # ok | timeout | memory | crash
    dags: list[dict[str, Any]] = field(default_factory=list)
    import_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)
    xcom_missing: list[list[str]] = field(default_factory=list)
    elapsed: float = 0.0
    error: str = ""
    timing: dict[str, float] = field(default_factory=dict)  # inside the child: DagBag parse, inspection

    @property
    def ok(self) -> bool:
        return not self.findings()

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        if self.violations:
            out.append(make_finding("DC904", 0, 0, "refused while parsing: " + "; ".join(self.violations[:5])))
        if self.status == "timeout":
            out.append(make_finding("DC902", 0, 0, f"parsing did not finish within the time limit "
                                    f"({self.elapsed:.1f} s)"))
        elif self.status == "memory":
            out.append(make_finding("DC903", 0, 0, "parsing exceeded the memory limit"))
        elif self.status == "crash":
            out.append(make_finding("DC906", 0, 0, (self.error or "the parsing process died")[-1500:]))
        for err in self.import_errors:
            if "dagcheck-sandbox:" in err:
                continue  # already reported as DC904
            if "MemoryError" in err:
                out.append(make_finding("DC903", _tb_line(err), 0, "parsing exceeded the memory limit (MemoryError)"))
                continue
            out.append(make_finding("DC901", _tb_line(err), 0, _last_line(err)[:1500]))
        if self.status == "ok" and not self.import_errors and not self.violations and not self.dags:
            out.append(make_finding("DC905", 0, 0, "Airflow imported the file but found no DAG in it"))
        for o in self.orphans:
            out.append(make_finding("DC304", 0, 0, f"Airflow built task {o.get('task_id')!r} "
                                    f"({o.get('operator')}) outside any DAG"))
        for consumer, tid in self.xcom_missing:
            out.append(make_finding("DC303", 0, 0, f"task {consumer!r} pulls XCom from {tid!r}, which no DAG in "
                                    "the file has"))
        for f in out:
            f.tier = "airflow"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("status", "dags", "import_errors", "violations", "orphans",
                                                  "xcom_missing", "elapsed", "error")}


def _last_line(tb: str) -> str:
    lines = [ln for ln in tb.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else tb


def _tb_line(tb: str) -> int:
    """The line in the DAG file where the traceback ends (files are parsed as dags/<n>/name.py)."""
    import re

    hits = re.findall(r'File "[^"]*/dags/[^"]*", line (\d+)', tb)
    if hits:
        return int(hits[-1])
    m = re.search(r"line (\d+)", tb)
    return int(m.group(1)) if m else 0


class AirflowEngine:
    """A warm Airflow worker: start it once, check many files, close it (or use `with`)."""

    def __init__(self, airflow: int = 3, *, env_root: Path | None = None, timeout_s: float = 30.0,
                 memory_mb: int = 1024, network_isolation: bool = True) -> None:
        self.airflow = airflow
        self.python = env_python(airflow, env_root)
        if not self.python.is_file():
            raise UserError(f"no Airflow {airflow} environment at {self.python.parent.parent}: run "
                            "`make airflow-env` (or tools/airflow_env.sh) first, or point "
                            f"${ENV_VAR} at one")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.network_isolation = network_isolation
        self.proc: subprocess.Popen | None = None
        self.scratch: Path | None = None
        self.version = ""
        self._n = 0

    def __enter__(self) -> AirflowEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.proc is not None:
            return
        self.scratch = Path(tempfile.mkdtemp(prefix="dagcheck-airflow-")).resolve()
        home = self.scratch / "airflow_home"
        (self.scratch / "dags").mkdir(parents=True)
        home.mkdir()
        (self.scratch / "tmp").mkdir()
        template = self.python.parent.parent / "dagcheck-template.db"
        if template.is_file():  # a migrated metadata DB (tools/airflow_env.sh): a private copy per run
            shutil.copyfile(template, home / "airflow.db")
        env = {  # scrubbed: nothing from the caller's environment reaches the DAG code
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.scratch),
            "TMPDIR": str(self.scratch / "tmp"),
            "LANG": "C.UTF-8",
            "DAGCHECK_SCRATCH": str(self.scratch),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.scratch / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "0",  # our own limits apply
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "NO_PROXY": "*",
        }
        prefix = _netns_prefix() if self.network_isolation else ()
        cmd = [*prefix, str(self.python), "-I", "-B", str(RUNNER)]
        log.debug("starting the airflow worker: %s", " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=self.scratch, env=env, text=True, start_new_session=True)
        ready = self._read_line(timeout=180)
        if not ready or not ready.get("ready"):
            self.close()
            raise UserError(f"the Airflow {self.airflow} worker did not start ({self.python}); rebuild it with "
                            "`make airflow-env`")
        self.version = ready.get("airflow", "")
        log.info("airflow tier: Airflow %s worker ready", self.version)

    def _read_line(self, timeout: float) -> dict[str, Any] | None:
        import select

        assert self.proc is not None and self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return None
        line = self.proc.stdout.readline()
        if not line:
            return None
        try:
            return json.loads(line)
        except ValueError:
            return None

    def close(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    if stream:
                        stream.close()
                except OSError:
                    pass
            self.proc = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def check_source(self, source: str, filename: str = "dag.py",
                     support: dict[str, bytes] | None = None) -> AirflowResult:
        """Parse one file with the real DagBag. support: modules of the file's own package (import-relative
        path -> bytes), written beside it with that folder on sys.path, as Airflow puts its dags folder there."""
        for rel in support or {}:
            if Path(rel).is_absolute() or ".." in Path(rel).parts or not rel.endswith(".py"):
                raise UserError(f"support module {rel!r}: expected a relative path to a .py file inside its package")
        self.start()
        assert self.proc is not None and self.proc.stdin is not None and self.scratch is not None
        self._n += 1
        name = Path(filename).name or "dag.py"
        if not name.endswith(".py"):
            name += ".py"
        # One folder per file keeps its own name: DAGs that derive their dag_id from __file__ stay the same.
        path = self.scratch / "dags" / str(self._n) / name
        path.parent.mkdir()
        path.write_text(source, encoding="utf-8", errors="surrogateescape")
        req = {"id": self._n, "path": str(path), "timeout": self.timeout_s, "memory_mb": self.memory_mb}
        for rel, data in (support or {}).items():
            target = path.parent / rel
            if target == path:
                continue  # the DAG file itself ships inside its package: the source given wins
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if support:
            req["sys_path"] = str(path.parent)
        t0 = time.monotonic()
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            res = self._read_line(timeout=self.timeout_s + 60)
        except (BrokenPipeError, OSError):
            res = None
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        if res is None:
            # The worker itself died or hung: restart it for the next file, report this one.
            self.close()
            return AirflowResult(status="crash", error="the Airflow worker stopped answering",
                                 elapsed=time.monotonic() - t0)
        return AirflowResult(status=res.get("status", "crash"), dags=res.get("dags", []),
                             import_errors=res.get("import_errors", []), violations=res.get("violations", []),
                             orphans=res.get("orphans", []), xcom_missing=res.get("xcom_missing", []),
                             elapsed=float(res.get("elapsed", 0.0)), error=res.get("error", ""),
                             timing=res.get("timing", {}))
