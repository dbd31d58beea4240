"""The airflow tier's worker: runs INSIDE the separate Airflow virtualenv, never in the pipeline's process.

It is started by airflow_tier.py as `<airflow-env>/bin/python -I -B _runner.py` with a scrubbed environment,
in a scratch directory, in its own network namespace where the OS allows it. It imports Airflow once,
then, for each DAG file it is sent (one JSON object per line on stdin), forks a child that:
  - starts its own session (so the whole process group can be killed),
  - sets resource limits (address space, CPU seconds, core size),
  - installs an audit hook that refuses writes outside the scratch directory, sockets, new processes
    and native code loading, and records every refusal,
  - parses the file with Airflow's own DagBag and reports what Airflow built.
The parent waits for the child with a wall-clock timeout, then kills its whole process group.
Results go back as one JSON object per line on the original stdout (Airflow's own prints go to stderr).

Standard library and Airflow only: this file must not import airflow_net.
"""

from __future__ import annotations

import ast
import json
import os
import re
import resource
import select
import signal
import sys
import time
import traceback

PROTO_OUT = None  # the protocol stream (the original stdout)
CREATED: list = []  # every operator built in this process (BaseOperator.__init__ is wrapped, see track_operators)
MARK = "dagcheck-sandbox:"


def _log(msg: str) -> None:
    print(f"[dagcheck runner] {msg}", file=sys.stderr, flush=True)


# -- inside the child ---------------------------------------------------------------------------------------------
def install_audit_hook(scratch: str, violations: list[str], dag_path: str) -> None:
    """Refuse, and record, what a DAG file must not do while it is parsed.

    Airflow itself does a few such things while it parses (Airflow 2 writes to /dev/null and calls libc
    through ctypes), so a call is refused only when code from the DAG file (or code it compiled at run
    time, whose file name is like "<string>") is on the stack: the DAG's module body, its functions and
    anything they call, including callbacks that Airflow invokes.
    """
    # Everything the hook uses is bound here, so a DAG that monkeypatches os.path or sys cannot blind it.
    realpath, fspath, fsdecode, getframe, devnull, sep = (os.path.realpath, os.fspath, os.fsdecode, sys._getframe,
                                                          os.devnull, os.sep)
    scratch = realpath(scratch)
    dag_files = {dag_path, realpath(dag_path)}

    def under_scratch(path) -> bool:
        try:
            p = realpath(fspath(path))
        except (TypeError, ValueError):
            return False
        return p == scratch or p.startswith(scratch + sep)

    def from_dag_code() -> bool:
        f = getframe(2)
        while f is not None:
            name = f.f_code.co_filename
            if name in dag_files or (name.startswith("<") and not name.startswith("<frozen")):
                return True
            f = f.f_back
        return False

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                   "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
                   "os.chflags", "os.lchown", "os.lchmod"}
    process_events = {"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system",
                      "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn", "os.startfile", "os.putenv",
                      "os.unsetenv", "resource.setrlimit", "resource.prlimit"}
    net_events = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
                  "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "urllib.Request",
                  "http.client.connect", "ftplib.connect", "smtplib.connect", "telnetlib.Telnet.open"}
    native_events = {"ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.addressof",
                     "ctypes.string_at", "ctypes.wstring_at", "sys.remote_exec"}
    active = [True]

    def refuse(what: str) -> None:
        if not from_dag_code():
            return
        if len(violations) < 50:
            violations.append(what)
        raise PermissionError(f"{MARK} {what} is not allowed while a DAG file is parsed")

    def hook(event: str, args: tuple) -> None:
        if not active[0]:
            return
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            if isinstance(path, int) or path is None:
                return
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & write_flags))
            if writing and not under_scratch(path) and fspath(path) != devnull:
                refuse(f"writing {fspath(path)!s}"[:300])
        elif event in path_events:
            for a in args[:2]:
                if isinstance(a, (str, bytes, os.PathLike)) and not under_scratch(fsdecode(a)):
                    refuse(f"{event} on {fsdecode(a)}"[:300])
        elif event in process_events:
            refuse(f"{event} (starting or signalling processes)")
        elif event in net_events:
            refuse(f"{event} (network access)")
        elif event == "socket.bind":
            # Libraries probe for IPv6 at import time by binding to ::1 (urllib3): loopback only is harmless.
            addr = args[1] if len(args) > 1 else None
            host = addr[0] if isinstance(addr, tuple) and addr else addr
            if host not in ("::1", "127.0.0.1", "localhost") and not isinstance(host, (bytes, type(None))):
                refuse(f"socket.bind to {host!r} (network access)")
        elif event in native_events:
            refuse(f"{event} (native code)")

    sys.addaudithook(hook)


def set_limits(memory_mb: int, cpu_s: int) -> None:
    with open("/proc/self/statm") as f:
        vm_pages = int(f.read().split()[0])
    base = vm_pages * os.sysconf("SC_PAGE_SIZE")
    limit = base + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:  # ignored for root, effective for everyone else
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except (ValueError, OSError):
        pass


XCOM_RE = re.compile(r"xcom_pull\s*\(")


def _xcom_ids_from_call(call: ast.Call) -> list[str]:
    if any(k.arg == "dag_id" for k in call.keywords):
        return []
    target = next((k.value for k in call.keywords if k.arg == "task_ids"), call.args[0] if call.args else None)
    if isinstance(target, ast.Constant) and isinstance(target.value, str):
        return [target.value]
    if isinstance(target, (ast.List, ast.Tuple)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in target.elts):
        return [e.value for e in target.elts]
    return []


def _xcom_ids_in_text(text: str) -> list[str]:
    out = []
    for m in XCOM_RE.finditer(text):
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        try:
            expr = ast.parse("f(" + text[m.end():j], mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if isinstance(expr, ast.Call):
            out += _xcom_ids_from_call(expr)
    return out


def _strings(value, depth: int = 0):
    if depth > 4:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _strings(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v, depth + 1)


def _callable_xcom_ids(fn) -> list[str]:
    import inspect
    import textwrap

    try:
        src = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(src)
    except (OSError, TypeError, SyntaxError, ValueError, IndentationError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "xcom_pull":
            out += _xcom_ids_from_call(node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "xcom_pull" in node.value:
            out += _xcom_ids_in_text(node.value)
    return out


def track_operators(major: int) -> None:
    """Wrap BaseOperator.__init__ so that every operator a DAG file builds is recorded (cheaper than scanning
    the garbage collector's objects in a forked child, which would copy every page of the heap)."""
    import functools

    if major >= 3:
        from airflow.sdk import BaseOperator
    else:
        from airflow.models.baseoperator import BaseOperator
    orig = BaseOperator.__init__

    @functools.wraps(orig)
    def __init__(self, *args, **kwargs):  # noqa: N807
        CREATED.append(self)
        return orig(self, *args, **kwargs)

    BaseOperator.__init__ = __init__


def inspect_dags(bag, major: int) -> dict:
    """What Airflow built: DAGs with tasks and edges, tasks created outside any DAG, XCom pulls of task
    ids that no DAG in the file has (read from the real tasks' templated fields and callables)."""
    dags = []
    known: set[str] = set()
    pulls: list[tuple[str, str]] = []
    for dag_id, dag in sorted(bag.dags.items()):
        tasks = {}
        edges = []
        for t in dag.tasks:
            name = getattr(t, "custom_operator_name", None) or getattr(t, "operator_name", None) or type(t).__name__
            tasks[t.task_id] = name
            edges += [[t.task_id, d] for d in sorted(t.downstream_task_ids)]
            known.add(t.task_id)
            for field in getattr(t, "template_fields", ()) or ():
                try:
                    value = getattr(t, field, None)
                except Exception:
                    continue
                for s in _strings(value):
                    if "xcom_pull" in s:
                        pulls += [(t.task_id, x) for x in _xcom_ids_in_text(s)]
            fn = getattr(t, "python_callable", None)
            if fn is not None:
                pulls += [(t.task_id, x) for x in _callable_xcom_ids(fn)]
        try:
            schedule = getattr(dag, "schedule", None)
            schedule = schedule if isinstance(schedule, str) or schedule is None else repr(schedule)
        except Exception:
            schedule = None
        dags.append({"dag_id": dag_id, "tasks": tasks, "edges": sorted(edges), "schedule": schedule,
                     "fileloc": getattr(dag, "fileloc", None)})
    # Operators that belong to no DAG: every operator the import built (see track_operators).
    orphans = []
    for obj in CREATED:
        try:
            has = obj.has_dag()
        except Exception:
            has = getattr(obj, "_dag", None) is not None
        if not has:
            orphans.append({"task_id": getattr(obj, "task_id", "?"), "operator": type(obj).__name__})
    missing = sorted({(t, x) for t, x in pulls if x not in known})
    return {"dags": dags, "orphans": orphans, "xcom_missing": [list(m) for m in missing]}


def child_main(path: str, workdir: str, scratch: str, memory_mb: int, cpu_s: int, major: int, wfd: int,
               DagBag, sys_path: str | None = None) -> None:  # noqa: N803 (the class is passed in, loaded once)
    violations: list[str] = []
    result: dict = {"status": "ok", "import_errors": [], "violations": violations}
    try:
        if sys_path:  # the file's own package beside it (inside the scratch folder), as a dags folder is
            sys.path.insert(0, sys_path)
        os.setsid()
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
        set_limits(memory_mb, cpu_s)
        install_audit_hook(scratch, violations, path)
        t0 = time.monotonic()
        if major >= 3:
            bag = DagBag(dag_folder=path, safe_mode=False, load_op_links=False)
        else:
            bag = DagBag(dag_folder=path, include_examples=False, safe_mode=False, read_dags_from_db=False,
                         load_op_links=False)
        t1 = time.monotonic()
        result["import_errors"] = [str(v)[-4000:] for v in bag.import_errors.values()]
        result.update(inspect_dags(bag, major))
        result["timing"] = {"dagbag_s": round(t1 - t0, 4), "inspect_s": round(time.monotonic() - t1, 4)}
    except MemoryError:
        result["status"] = "memory"
    except BaseException as exc:  # noqa: BLE001 - report everything, the parent decides
        result["status"] = "crash"
        result["error"] = "".join(traceback.format_exception(exc))[-4000:]
    try:
        data = json.dumps(result, default=str).encode()
    except MemoryError:
        data = json.dumps({"status": "memory", "import_errors": [], "violations": violations}).encode()
    os.write(wfd, data)
    os.close(wfd)
    os._exit(0)


def run_one(req: dict, DagBag, major: int, scratch: str) -> dict:  # noqa: N803
    path = req["path"]
    timeout = float(req.get("timeout", 30))
    memory_mb = int(req.get("memory_mb", 1024))
    workdir = os.path.join(scratch, "work", str(req.get("id", "0")))
    rfd, wfd = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            child_main(path, workdir, scratch, memory_mb, max(1, int(timeout) + 1), major, wfd, DagBag,
                       req.get("sys_path"))
        finally:
            os._exit(3)
    os.close(wfd)
    chunks = []
    status = None
    deadline = t0 + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timeout"
            break
        r, _, _ = select.select([rfd], [], [], left)
        if not r:
            continue
        chunk = os.read(rfd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    # Whatever happened, nothing the file started may outlive it: kill its whole process group.
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _, wstatus = os.waitpid(pid, 0)
    elapsed = time.monotonic() - t0
    if status == "timeout":
        return {"status": "timeout", "elapsed": elapsed, "import_errors": [], "violations": []}
    try:
        out = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        out = {}
    if not out:
        sig = os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else None
        status = "crash"
        if sig in (signal.SIGXCPU,):
            status = "timeout"
        elif sig == signal.SIGKILL:
            status = "memory"  # the kernel's OOM killer, the only one that sends SIGKILL here
        out = {"status": status, "import_errors": [], "violations": [],
               "error": f"the parsing process died (signal {sig}, status {wstatus})"}
    out["elapsed"] = elapsed
    return out


def main() -> int:
    global PROTO_OUT
    # Keep the protocol stream to ourselves: anything Airflow prints goes to stderr.
    PROTO_OUT = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    scratch = os.path.realpath(os.environ["DAGCHECK_SCRATCH"])
    import warnings

    warnings.simplefilter("ignore")
    import airflow

    major = int(airflow.__version__.split(".")[0])
    if major >= 3:
        from airflow.dag_processing.dagbag import DagBag
    else:
        from airflow.models.dagbag import DagBag
    import logging

    logging.disable(logging.CRITICAL)
    # Import what most DAG files import, once, before forking: each file's child then starts warm.
    for mod in ("pendulum", "airflow.sdk", "airflow.decorators", "airflow.operators.python", "airflow.operators.bash",
                "airflow.operators.empty", "airflow.providers.standard.operators.python",
                "airflow.providers.standard.operators.bash", "airflow.providers.standard.operators.empty",
                "airflow.providers.standard.sensors.time_delta", "airflow.utils.task_group", "urllib3", "requests"):
        try:
            __import__(mod)
        except Exception:
            pass
    try:
        track_operators(major)
    except Exception as exc:
        _log(f"cannot track operators: {exc!r}")
    # Warm up: the first DagBag in a process initialises plugins, listeners and settings (~0.3 s); doing it
    # here once means every forked child starts from a warm parent.
    warm = os.path.join(scratch, "warmup_dag.py")
    with open(warm, "w") as f:
        f.write("# airflow dag\n")
    try:
        if major >= 3:
            DagBag(dag_folder=warm, safe_mode=False, load_op_links=False)
        else:
            DagBag(dag_folder=warm, include_examples=False, safe_mode=False, read_dags_from_db=False,
                   load_op_links=False)
    except Exception as exc:
        _log(f"warm-up failed: {exc!r}")
    os.unlink(warm)
    PROTO_OUT.write(json.dumps({"ready": True, "airflow": airflow.__version__}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            res = run_one(req, DagBag, major, scratch)
        except Exception as exc:  # never let one file stop the worker
            res = {"status": "crash", "error": repr(exc), "import_errors": [], "violations": []}
        res["id"] = req.get("id")
        PROTO_OUT.write(json.dumps(res, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
