#!/usr/bin/env python3
"""Build dagcheck's index of Airflow's public API from the real apache-airflow packages.

    python tools/build_api_index.py                      # throwaway virtualenvs under /tmp (~3 min, network)
    python tools/build_api_index.py --envs .airflow-env   # reuse the environments of `make airflow-env`

For Airflow 3 and 2 it installs apache-airflow plus the providers listed in tools/airflow_env.sh into
throwaway virtualenvs (`python3 -m venv`, the base interpreter), imports every module under `airflow`
there, and records:
  - modules and the public names importable from each (including lazy and deprecated names), and which
    of them each module defines (rather than re-exports), for "add this import" hints;
  - constructor parameters of every operator, sensor, DAG and TaskGroup class (inherited BaseOperator
    arguments included; which are required; whether unknown keyword arguments are accepted);
  - deprecated paths (those that warn on import) with the path they point to;
  - the top-level modules importable in the environment (third-party packages that come with Airflow).
Then it derives the candidate Airflow 3 removals (paths importable in 2.10 that the Airflow 3 walk does not
list), imports each of them in the real Airflow 3 environment (`import a.b`, else `from a import b`), and keeps
as removed only those that fail: the ones that still resolve, through compatibility shims, go to `shims` (with
the warning they raise) and to the deprecated paths, so dagcheck calls them warnings, as the loader does.
It writes src/airflow_net/dagcheck/data/airflow_api.json.gz (a few hundred KB).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("build_api_index")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "airflow_net" / "dagcheck" / "data" / "airflow_api.json.gz"

# Renamed in Airflow 3 (the name changed, not only the module): old name -> new name.
RENAMED_IN_3 = {
    "DummyOperator": "EmptyOperator",
    "Dataset": "Asset",
    "DatasetAlias": "AssetAlias",
    "DatasetAll": "AssetAll",
    "DatasetAny": "AssetAny",
    "DatasetOrTimeSchedule": "AssetOrTimeSchedule",
    "SubDagOperator": "TaskGroup",
    "days_ago": "",  # use pendulum.datetime(...) / pendulum.today("UTC").add(days=-n)
}

# Runs inside an Airflow virtualenv and prints the facts as JSON on its last line of stdout.
INTROSPECT = r'''
import importlib, inspect, json, pkgutil, re, sys, warnings, io, contextlib, logging
logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")
captured = []
import airflow
import airflow.utils.deprecation_tools as dt
_orig = dt.add_deprecated_classes
def _spy(module_imports, package, override_deprecated_classes=None, *a, **k):
    captured.append((package, {m: dict(v) for m, v in module_imports.items()}))
    return _orig(module_imports, package, override_deprecated_classes, *a, **k)
dt.add_deprecated_classes = _spy
major = int(airflow.__version__.split(".")[0])
if major >= 3:
    from airflow.sdk import BaseOperator, DAG, TaskGroup
else:
    from airflow.models.baseoperator import BaseOperator
    from airflow.models.dag import DAG
    from airflow.utils.task_group import TaskGroup

SKIP = re.compile(r"(^|\.)(_[^.]*|tests?|migrations|www|ui|api_fastapi|conftest)(\.|$)")
modules, failed = {}, {}
def visit(name):
    if name in modules or name in failed or SKIP.search(name):
        return None
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            m = importlib.import_module(name)
    except BaseException as e:
        failed[name] = type(e).__name__
        return None
    modules[name] = m
    return m

import os
def children(m):
    """Submodules and subpackages, namespace packages included (pkgutil skips those: airflow.providers)."""
    seen = set()
    for d in list(getattr(m, "__path__", None) or []):
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            stem = e.name[:-3] if e.name.endswith(".py") else e.name
            if stem in seen or not stem.isidentifier() or stem == "__init__":
                continue
            if e.is_file() and e.name.endswith(".py"):
                seen.add(stem)
                yield stem, False
            elif e.is_dir() and any(f.endswith(".py") for _, _, fs in os.walk(e.path) for f in fs):
                seen.add(stem)
                yield stem, True

visit("airflow")
queue = ["airflow"]
while queue:
    name = queue.pop()
    m = modules.get(name)
    for child, ispkg in children(m):
        sub = f"{name}.{child}"
        if visit(sub) is not None and ispkg:
            queue.append(sub)
for package, imports in captured:
    for key in imports:
        full = package if key in (package, "__name__") else f"{package}.{key}"
        visit(full)

def is_operator(obj):
    try:
        return inspect.isclass(obj) and issubclass(obj, BaseOperator)
    except Exception:
        return False

def ctor(cls):
    """Every keyword the constructor chain accepts. Required: the class's own required parameters and
    BaseOperator's (task_id); a parent's other required parameters are often filled in by the subclass."""
    params, required, accepts = [], [], True
    seen = set()
    first = True
    for klass in cls.__mro__:
        if klass is object:
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        init = getattr(init, "__wrapped__", init)
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            break
        has_var_kw = False
        for p in list(sig.parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                has_var_kw = True
            elif p.kind is p.VAR_POSITIONAL:
                continue
            elif p.name not in seen:
                seen.add(p.name)
                params.append(p.name)
                if p.default is p.empty and (first or klass is BaseOperator):
                    required.append(p.name)
        first = False
        if klass is BaseOperator:
            accepts = False  # BaseOperator rejects unknown keyword arguments (AirflowException / TypeError)
            break
        if not has_var_kw:
            accepts = False
            break
    return {"params": params, "required": required, "accepts_kwargs": accepts}

names, classes, aliases, deprecated, defined = {}, {}, {}, {}, {}
DEP = re.compile(r"airflow\.[A-Za-z0-9_.]+")
for name, m in sorted(modules.items()):
    cands = set(n for n in dir(m) if not n.startswith("_"))
    cands |= set(getattr(m, "__all__", []) or [])
    for attr in list(vars(m)):
        if "lazy_imports" in attr or "deprecated" in attr.lower():
            val = vars(m)[attr]
            if isinstance(val, dict):
                cands |= {k for k in val if isinstance(k, str) and not k.startswith("_")}
    ok = []
    for n in sorted(cands):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    obj = getattr(m, n)
            except BaseException:
                continue
        ok.append(n)
        path = f"{name}.{n}"
        for warning in w:
            if "deprecat" in type(warning.message).__name__.lower() or "deprecat" in str(warning.message).lower():
                targets = [t.rstrip(".") for t in DEP.findall(str(warning.message)) if t.rstrip(".") != path]
                deprecated[path] = targets[-1] if targets else ""
                break
        if inspect.ismodule(obj):
            continue
        if getattr(obj, "__module__", None) == name:
            defined.setdefault(name, []).append(n)
        if is_operator(obj) or obj is DAG or obj is TaskGroup:
            canon = f"{obj.__module__}.{obj.__qualname__}"
            if canon not in classes:
                info = ctor(obj)
                info["operator"] = is_operator(obj)
                classes[canon] = info
            if path != canon:
                aliases[path] = canon
    names[name] = ok

for package, imports in captured:
    for key, mapping in imports.items():
        full = package if key in (package, "__name__") else f"{package}.{key}"
        for n, target in mapping.items():
            if n == "*":
                deprecated[full] = target
            else:
                deprecated[f"{full}.{n}"] = target
                names.setdefault(full, [])
                if n not in names[full]:
                    names[full].append(n)

# sys.path[0] is this script's temporary folder: whatever else lies there is not part of the environment.
top = sorted({i.name for i in pkgutil.iter_modules(sys.path[1:]) if not i.name.startswith("_")})
providers = {}
try:
    from importlib.metadata import distributions
    for d in distributions():
        nm = d.metadata["Name"] or ""
        if nm.lower().startswith("apache-airflow"):
            providers[nm.lower()] = d.version
except Exception:
    pass
print(json.dumps({"airflow_version": airflow.__version__, "packages": providers, "modules": names, "defined": defined,
                  "classes": classes, "aliases": aliases, "deprecated": deprecated, "top_level": top,
                  "failed": failed}))
'''


# Runs inside an Airflow virtualenv: reads dotted paths (one a line) on stdin and imports each the way a DAG file
# would (`import a.b` for a module, else `from a import b`), recording whether it resolves and which warning
# it raises. This is what decides "removed" (the loader fails) from "deprecated" (a compatibility shim loads
# it, with a warning): the module walk above cannot see shims that live in a package's __getattr__.
PROBE = r'''
import importlib, json, sys, warnings, io, contextlib, logging
logging.disable(logging.CRITICAL)
out = {}
for path in sys.stdin.read().split():
    res = {"ok": False, "warning": "", "message": ""}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    importlib.import_module(path)
                except ImportError:
                    mod, _, name = path.rpartition(".")
                    if not mod:
                        raise
                    getattr(importlib.import_module(mod), name)
            res["ok"] = True
        except BaseException as e:
            res["message"] = f"{type(e).__name__}: {e}"[:200]
    for warning in w:
        text = str(warning.message)
        if "deprecat" in warning.category.__name__.lower() or "deprecat" in text.lower() or "moved" in text.lower():
            res["warning"] = warning.category.__name__
            if res["ok"]:
                res["message"] = text[:300]
            break
    out[path] = res
print(json.dumps(out))
'''


def _airflow_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}


def probe(python: Path, paths: list[str]) -> dict[str, dict]:
    """{path: {ok, warning, message}}: what importing each path does in that Airflow environment."""
    with tempfile.TemporaryDirectory(prefix="dagcheck-index-home-") as home:
        script = Path(home) / "probe.py"
        script.write_text(PROBE)
        env = {**_airflow_env(), "HOME": home, "AIRFLOW_HOME": home}
        proc = subprocess.run([str(python.absolute()), "-B", str(script)], input="\n".join(sorted(paths)),
                              capture_output=True, text=True, env=env, cwd=home, timeout=1800)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"import probe failed in {python}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def introspect(python: Path) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(INTROSPECT)
        script = f.name
    with tempfile.TemporaryDirectory(prefix="dagcheck-index-home-") as home:
        env = {**_airflow_env(), "HOME": home, "AIRFLOW_HOME": home}
        proc = subprocess.run([str(python.absolute()), "-B", script], capture_output=True, text=True, env=env, cwd=home,
                              timeout=1800)
    Path(script).unlink(missing_ok=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"introspection failed in {python}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_path(name: str, modules: dict[str, list[str]]) -> str | None:
    """Where the Airflow 3 docs would import `name` from."""
    hits = [m for m, names in modules.items() if name in names]
    if not hits:
        return None

    def rank(m: str) -> tuple:
        if m == "airflow.sdk":
            return (0, 0, m)
        if m.startswith("airflow.providers.standard."):
            return (1, len(m), m)
        if "example_dags" in m or ".utils." in m:
            return (5, len(m), m)
        return (2, m.count("."), m)

    return f"{min(hits, key=rank)}.{name}"


def removals(v2: dict, v3: dict) -> dict[str, str]:
    """Paths importable in Airflow 2.10 that Airflow 3 no longer has, with the path to use instead."""
    out: dict[str, str] = {}
    m3 = v3["modules"]
    for module, names in v2["modules"].items():
        if not module.startswith("airflow"):
            continue
        if module not in m3:
            mod_hint = ""
            out[module] = mod_hint
        for n in names:
            if module in m3 and n in m3[module]:
                continue
            new_name = RENAMED_IN_3.get(n, n)
            new = best_path(new_name, m3) if new_name else None
            out[f"{module}.{n}"] = new or ""
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=Path, help="reuse Airflow virtualenvs <ENVS>/3 and <ENVS>/2 (else: throwaway ones)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    tmp = None
    envs = args.envs
    if envs is None:
        tmp = tempfile.TemporaryDirectory(prefix="dagcheck-airflow-envs-", dir="/tmp")
        envs = Path(tmp.name)
        log.info("installing Airflow 3 and 2 into throwaway virtualenvs under %s (a few minutes)", envs)
        subprocess.run([str(ROOT / "tools" / "airflow_env.sh"), str(envs), "3 2"], check=True)
    data: dict = {"format": 1, "complete": True, "versions": {}}
    for major in ("3", "2"):
        python = envs / major / "bin" / "python"
        log.info("introspecting Airflow %s in %s", major, python)
        facts = introspect(python)
        log.info("  Airflow %s: %d modules, %d classes, %d deprecated paths, %d modules failed to import",
                 facts["airflow_version"], len(facts["modules"]), len(facts["classes"]),
                 len(facts["deprecated"]), len(facts["failed"]))
        data["versions"][major] = facts
    v2, v3 = data["versions"]["2"], data["versions"]["3"]
    removed = removals(v2, v3)
    # Deprecated-but-working paths matter for the Airflow 3 target; Airflow 2's own deprecations stay per version.
    data["deprecated"] = v3.pop("deprecated")
    # The verdict is the loader's: a path that Airflow 3 still imports (through a compatibility shim) is not
    # removed, whatever the module walk saw. Probe every candidate in the real Airflow 3 environment.
    log.info("probing %d candidate removals in Airflow 3", len(removed))
    probed = probe(envs / "3" / "bin" / "python", list(removed))
    shims: dict[str, dict] = {}
    for path, res in probed.items():
        if res["ok"]:
            new = removed.pop(path)
            shims[path] = {"warning": res["warning"], "message": res["message"]}
            data["deprecated"].setdefault(path, new)
    data["removed"] = removed
    data["shims"] = shims  # old path -> the warning Airflow 3 gives on import ("" when none)
    log.info("  %d of them still import in Airflow 3 (%d with a warning): deprecated, not removed", len(shims),
             sum(1 for v in shims.values() if v["warning"]))
    data["deprecated_2"] = v2.pop("deprecated")
    for v in (v2, v3):
        v.pop("failed", None)
        v["modules"] = {m: sorted(set(n)) for m, n in sorted(v["modules"].items())}
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same packages give the same bytes
    args.out.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    log.info("wrote %s (%.0f KB, %.1f MB uncompressed): %d removed paths in Airflow 3", args.out,
             args.out.stat().st_size / 1024, len(raw) / 1e6, len(data["removed"]))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
