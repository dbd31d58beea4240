"""The index of Airflow's public API that imports and operator arguments are checked against.

The index is generated from the real apache-airflow packages by tools/build_api_index.py and shipped as
package data (data/airflow_api.json.gz). It records, per Airflow major version, every importable module
under `airflow` (core and the providers installed with it), the public names in each, the constructor
parameters of operators, sensors and DAG, and the paths that Airflow 3 removed or deprecated with the path
to use instead. Without the generated file a small built-in table (the paths DAG authors use most) keeps
the validator working, with fewer checks: unknown modules are then never reported.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

log = logging.getLogger(__name__)

INDEX_FILE = "airflow_api.json.gz"

# -- the built-in fallback ---------------------------------------------------------------------------------------
_SDK3 = (  # airflow.sdk.__all__ in Airflow 3.3.2
    "AllowedKeyMapper Asset AssetAccessControl AssetAlias AssetAll AssetAny AssetOrTimeSchedule "
    "AssetWatcher AsyncCallback BaseAsyncOperator BaseBranchOperator BaseDeadlineReference BaseHook "
    "BaseNotifier BaseOperator BaseOperatorLink BaseSensorOperator BaseXCom BranchMixIn ChainMapper "
    "Connection Context CronDataIntervalTimetable CronPartitionTimetable CronTriggerTimetable DAG "
    "DagRunState DayWindow DeadlineAlert DeadlineReference DeltaDataIntervalTimetable "
    "DeltaTriggerTimetable EdgeModifier EventsTimetable ExceptionRetryPolicy FanOutMapper FixedKeyMapper "
    "HourWindow IdentityMapper Label Metadata MinimumCount MonthWindow MultipleCronTriggerTimetable "
    "NEVER_EXPIRE ObjectStoragePath Param ParamsDict PartitionMapper PartitionedAssetTimetable "
    "PartitionedAtRuntime PokeReturnValue ProductMapper QuarterWindow ResumableJobMixin RetryAction "
    "RetryDecision RetryPolicy RetryRule RollupMapper SegmentWindow SkipMixin StartOfDayMapper "
    "StartOfHourMapper StartOfMonthMapper StartOfQuarterMapper StartOfWeekMapper StartOfYearMapper "
    "SyncCallback TaskGroup TaskInstance TaskInstanceState TriggerRule Variable WaitForAll WeekWindow "
    "WeightRule Window XComArg YearWindow __version__ asset chain chain_linear conf cross_downstream dag "
    "deadline_reference get_current_context get_parsing_context lineage literal macros result setup task "
    "task_group teardown "
).split()
_STD = "airflow.providers.standard"
_BUILTIN: dict[str, Any] = {
    "complete": False,
    "versions": {
        "3": {
            "modules": {
                "airflow": ["DAG", "Asset", "XComArg", "Dataset"],
                "airflow.sdk": _SDK3,
                f"{_STD}.operators.bash": ["BashOperator"],
                f"{_STD}.operators.python": ["PythonOperator", "BranchPythonOperator", "ShortCircuitOperator",
                                             "PythonVirtualenvOperator", "ExternalPythonOperator"],
                f"{_STD}.operators.empty": ["EmptyOperator"],
                f"{_STD}.operators.trigger_dagrun": ["TriggerDagRunOperator"],
                f"{_STD}.operators.latest_only": ["LatestOnlyOperator"],
                f"{_STD}.sensors.filesystem": ["FileSensor"],
                f"{_STD}.sensors.time_delta": ["TimeDeltaSensor"],
                f"{_STD}.sensors.time": ["TimeSensor"],
                f"{_STD}.sensors.python": ["PythonSensor"],
                f"{_STD}.sensors.bash": ["BashSensor"],
                f"{_STD}.sensors.date_time": ["DateTimeSensor"],
                f"{_STD}.sensors.external_task": ["ExternalTaskSensor", "ExternalTaskMarker"],
            },
        },
        "2": {"modules": {}},
    },
    # Airflow 3 removals: old path -> new path ("" when there is no direct replacement).
    "removed": {
        "airflow.operators.dummy.DummyOperator": f"{_STD}.operators.empty.EmptyOperator",
        "airflow.operators.dummy_operator.DummyOperator": f"{_STD}.operators.empty.EmptyOperator",
        "airflow.operators.bash_operator.BashOperator": f"{_STD}.operators.bash.BashOperator",
        "airflow.operators.python_operator.PythonOperator": f"{_STD}.operators.python.PythonOperator",
        "airflow.operators.subdag.SubDagOperator": "airflow.sdk.TaskGroup",
        "airflow.utils.dates.days_ago": "pendulum.today('UTC').add(days=-N)",
        "airflow.datasets.Dataset": "airflow.sdk.Asset",
        "airflow.contrib": "airflow.providers",
    },
    "deprecated": {  # (for Airflow 3)
        "airflow.operators.bash.BashOperator": f"{_STD}.operators.bash.BashOperator",
        "airflow.operators.python.PythonOperator": f"{_STD}.operators.python.PythonOperator",
        "airflow.operators.empty.EmptyOperator": f"{_STD}.operators.empty.EmptyOperator",
        "airflow.decorators.task": "airflow.sdk.task",
        "airflow.decorators.dag": "airflow.sdk.dag",
        "airflow.decorators.task_group": "airflow.sdk.task_group",
        "airflow.utils.task_group.TaskGroup": "airflow.sdk.TaskGroup",
        "airflow.models.baseoperator.chain": "airflow.sdk.chain",
        "airflow.models.dag.DAG": "airflow.sdk.DAG",
    },
    "classes": {},
}


@dataclass(frozen=True)
class ImportStatus:
    status: str  # ok | unknown-module | unknown-name | removed | deprecated | unchecked | uncovered
    new_path: str | None = None
    detail: str = ""


class ApiIndex:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.complete = bool(data.get("complete"))
        self.removed: dict[str, str] = data.get("removed", {})
        # deprecated: paths that still work in Airflow 3 but warn; deprecated_2: the same for Airflow 2.10
        self._deprecated = {"3": data.get("deprecated", {}), "2": data.get("deprecated_2", {})}
        self._top_level = {v: set(d.get("top_level", ())) for v, d in data.get("versions", {}).items()}
        self._modules = {v: {m: set(names) for m, names in d.get("modules", {}).items()}
                         for v, d in data.get("versions", {}).items()}
        self._classes: dict[str, dict[str, Any]] = {v: d.get("classes", {}) for v, d in data.get("versions", {}).items()}
        self._by_name: dict[str, dict[str, str]] = {}
        self._checked: dict[tuple[str, str | None, int], ImportStatus] = {}
        # Old paths that Airflow 3's loader still imports through a compatibility shim (probed in the real
        # environment by the index builder), with the warning it gives.
        self.shims: dict[str, dict[str, str]] = data.get("shims", {})
        # The provider namespaces the index covers completely: those installed when it was built.
        self._providers = {v: {_provider_namespace(p) for p in d.get("packages", {}) if p.startswith(_PROVIDER_DIST)}
                           for v, d in data.get("versions", {}).items()}

    @classmethod
    @functools.cache
    def load(cls) -> ApiIndex:
        try:
            raw = resources.files("airflow_net.dagcheck").joinpath("data", INDEX_FILE).read_bytes()
            return cls(json.loads(gzip.decompress(raw)))
        except (FileNotFoundError, OSError):
            log.debug("no generated API index (%s); using the built-in table", INDEX_FILE)
            return cls(_BUILTIN)

    def version_info(self, airflow: int) -> dict[str, Any]:
        d = self.data.get("versions", {}).get(str(airflow), {})
        return {k: v for k, v in d.items() if k not in ("modules", "classes")}

    def modules(self, airflow: int) -> dict[str, set[str]]:
        return self._modules.get(str(airflow), {})

    def modules_by_leaf(self, airflow: int) -> dict[str, list[str]]:
        """Module paths by their last component, for "did you mean" hints."""
        key = f"leaf{airflow}"
        if key not in self._by_name:
            out: dict[str, list[str]] = {}
            for m in self.modules(airflow):
                out.setdefault(m.rsplit(".", 1)[-1], []).append(m)
            self._by_name[key] = out  # type: ignore[assignment]
        return self._by_name[key]  # type: ignore[return-value]

    def has_module(self, module: str, airflow: int) -> bool:
        return module in self.modules(airflow)

    def _lookup_moved(self, table: dict[str, str], path: str) -> tuple[str, str] | None:
        """(old path matched, new path) for an exact entry or the nearest package prefix."""
        if path in table:
            return path, table[path]
        parts = path.split(".")
        for i in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in table:
                return prefix, table[prefix]
        return None

    def check(self, module: str, name: str | None, airflow: int) -> ImportStatus:
        """How `from module import name` (or `import module` when name is None) fares in this version.
        Cached: the same few imports open most DAG files."""
        key = (module, name, airflow)
        hit = self._checked.get(key)
        if hit is None:
            hit = self._checked[key] = self._check(module, name, airflow)
        return hit

    def _check(self, module: str, name: str | None, airflow: int) -> ImportStatus:
        if not (module == "airflow" or module.startswith("airflow.")):
            top = module.split(".")[0]
            known = self._top_level.get(str(airflow))
            if self.complete and known and top not in known and top not in sys.stdlib_module_names:
                return ImportStatus("missing-package", None, f"no module {top!r} in a standard Airflow {airflow} "
                                    "environment (Airflow, its common providers and their dependencies)")
            return ImportStatus("unchecked")
        path = f"{module}.{name}" if name else module
        mods = self.modules(airflow)
        in_module = module in mods and (name is None or name in mods[module] or f"{module}.{name}" in mods)
        if airflow >= 3 and (path in self.shims or (name is None and module in self.shims)):
            # The loader imports it (with a warning or not): deprecated, never an error.
            dep = self._lookup_moved(self._deprecated.get("3", {}), path) or self._lookup_moved(self.removed, path)
            return ImportStatus("deprecated", dep[1] if dep else None, path)
        if self.complete and not in_module and module.startswith("airflow.providers."):
            covered = self._providers.get(str(airflow), set())
            if covered and not any(module == ns or module.startswith(ns + ".") for ns in covered):
                return ImportStatus("uncovered", None, "a provider that the index does not cover")
            other = self.modules(5 - airflow)
            if module in other and (name is None or name in other[module]):
                # The provider had this path in the version installed with the other Airflow: it depends on the
                # provider's version, which a DAG file does not say.
                return ImportStatus("uncovered", None, "a provider path that depends on the provider's version")
        if airflow >= 3:
            moved = self._lookup_moved(self.removed, path)
            if moved and not in_module:
                return ImportStatus("removed", moved[1], moved[0])
        dep = self._lookup_moved(self._deprecated.get(str(airflow), {}), path)
        if dep and (in_module or not self.complete) and dep[0] == path:
            return ImportStatus("deprecated", dep[1], dep[0])
        if in_module:
            return ImportStatus("ok")
        if module in mods:
            # A known module without that name; with the built-in table only the fully listed ones count.
            if self.complete or module == "airflow.sdk":
                return ImportStatus("unknown-name")
            return ImportStatus("unchecked")
        if not self.complete:
            return ImportStatus("unchecked")
        return ImportStatus("unknown-module")

    def class_info(self, path: str, airflow: int) -> dict[str, Any] | None:
        """Constructor facts for an operator / sensor / DAG class: params, required, accepts_kwargs."""
        classes = self._classes.get(str(airflow), {})
        info = classes.get(path)
        if info is None:
            # The same class re-exported under another module: look it up by its canonical path.
            alias = self.data.get("versions", {}).get(str(airflow), {}).get("aliases", {}).get(path)
            info = classes.get(alias) if alias else None
        if info is None and "." in path:
            # A deprecated path that still loads (`airflow.operators.empty.EmptyOperator` in Airflow 3) builds
            # the class it points to: judge the arguments against that one.
            mod, _, name = path.rpartition(".")
            st = self.check(mod, name, airflow)
            if st.status == "deprecated" and st.new_path and st.new_path != path:
                return self.class_info(st.new_path, airflow)
        return info

    def suggest(self, name: str, airflow: int) -> str | None:
        """The import a DAG author most likely meant for a bare name (`BashOperator` -> its module): airflow.sdk,
        then `airflow` itself, then the public module that defines it, then any public module exporting it;
        never a deprecated path, a submodule of the same name or an example DAG."""
        key = str(airflow)
        if key not in self._by_name:
            mods = self.modules(airflow)
            defined = self.data.get("versions", {}).get(key, {}).get("defined", {})
            deprecated = self._deprecated.get(key, {})
            best: dict[str, tuple] = {}
            for mod, names in mods.items():
                if mod in deprecated:
                    continue
                home = set(defined.get(mod, ()))
                for n in names:
                    path = f"{mod}.{n}"
                    if path in mods or path in deprecated:
                        continue  # a submodule, or a path that only warns
                    rank = _path_rank(mod)
                    if rank[0] > 1 and n in home:
                        rank = (1.5, *rank[1:])
                    cur = best.get(n)
                    if cur is None or rank < cur[0]:
                        best[n] = (rank, mod)
            self._by_name[key] = {n: mod for n, (_, mod) in best.items()}
        mod = self._by_name[key].get(name)
        return f"from {mod} import {name}" if mod else None


_PROVIDER_DIST = "apache-airflow-providers-"


def _provider_namespace(dist: str) -> str:
    """apache-airflow-providers-cncf-kubernetes -> airflow.providers.cncf.kubernetes"""
    return "airflow.providers." + dist[len(_PROVIDER_DIST):].replace("-", ".")


def _path_rank(module: str) -> tuple[int, int, str]:
    """Prefer the paths the docs teach: airflow.sdk, `airflow` itself, the standard provider, short paths;
    never an example DAG or a private module that merely re-exports the name."""
    if ".example_dags" in module or "._" in module or ".tests" in module:
        return (9, len(module), module)
    if module == "airflow.sdk":
        return (0, 0, module)
    if module == "airflow":
        return (1, 0, module)
    if module.startswith("airflow.providers.standard."):
        return (2, len(module), module)
    return (3, module.count("."), module)


# Names a DAG author imports from outside Airflow: a bare use of one of these means a forgotten import.
COMMON_IMPORTS = {
    "datetime": "from datetime import datetime  (or: import datetime)",
    "timedelta": "from datetime import timedelta",
    "date": "from datetime import date",
    "timezone": "from datetime import timezone",
    "pendulum": "import pendulum",
    "Path": "from pathlib import Path",
    "dedent": "from textwrap import dedent",
    "pprint": "from pprint import pprint",
    "Any": "from typing import Any",
    "requests": "import requests",
}


def missing_import_hint(name: str, airflow: int, index: ApiIndex) -> str | None:
    if name in COMMON_IMPORTS:
        return COMMON_IMPORTS[name]
    if name in sys.stdlib_module_names:
        return f"import {name}"
    return index.suggest(name, airflow)
