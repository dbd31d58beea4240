"""dagcheck follows the target Airflow's loader: what it still imports is a warning (with the new path), what
it rejects is an error; timetables, assets and operators built in loops are checked wherever they are."""

from __future__ import annotations

import textwrap

import pytest

from airflow_net.dagcheck import check_source
from airflow_net.dagcheck.findings import DEPRECATION_CODES, ERROR, RULES, WARNING
from airflow_net.dagcheck.lint import lint_source

HEAD = textwrap.dedent("""\
    import pendulum
    from airflow.sdk import DAG, Asset, CronTriggerTimetable, CronDataIntervalTimetable
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.operators.python import PythonOperator
    """)


def dag(body: str, schedule: str = "None") -> str:
    return HEAD + (f'with DAG("d", schedule={schedule}, start_date=pendulum.datetime(2024, 1, 1)):\n'
                   + textwrap.indent(textwrap.dedent(body), "    "))


def by_code(src: str, airflow: int = 3) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in check_source(src, airflow=airflow).findings:
        out.setdefault(f.code, []).append(f)
    return out


SHIMS = [  # Airflow-2 paths that Airflow 3.3's loader still imports (probed by tools/build_api_index.py)
    ("airflow.models.dag", "DAG", "airflow.sdk.DAG"),
    ("airflow.models.baseoperator", "chain", "airflow.sdk.chain"),
    ("airflow.models.baseoperator", "BaseOperator", "airflow.sdk.BaseOperator"),
    ("airflow.models.param", "Param", "airflow.sdk.Param"),
    ("airflow.models.param", "ParamsDict", None),
    ("airflow.utils.task_group", "TaskGroup", "airflow.sdk.TaskGroup"),
    ("airflow.operators.python", "get_current_context", "airflow.sdk.get_current_context"),
]


@pytest.mark.parametrize(("module", "name", "new"), SHIMS)
def test_paths_that_still_load_are_warnings_with_the_new_path(module, name, new):
    src = dag('EmptyOperator(task_id="a")\n').replace("import pendulum\n", f"import pendulum\nfrom {module} import {name}\n")
    r = check_source(src, airflow=3)
    assert r.ok, [(f.code, f.message) for f in r.findings]
    [f] = [f for f in r.findings if f.code == "DC105"]
    assert f.severity == WARNING and f.code in DEPRECATION_CODES and r.deprecated
    if new:
        assert new.rpartition(".")[2] in f.hint and new.rpartition(".")[0] in f.hint


def test_removed_paths_stay_errors():
    src = dag('EmptyOperator(task_id="a")\n').replace("import pendulum\n", "import pendulum\nfrom airflow.utils.dates import days_ago\n")
    r = check_source(src, airflow=3)
    assert not r.ok and [f.code for f in r.errors] == ["DC104"] and not r.deprecated
    # it still existed in 2.10 (only airflow.sdk, which 2.10 lacks, is reported there)
    assert not any("days_ago" in f.message for f in check_source(src, airflow=2).findings)


def test_uncovered_provider_is_a_warning_not_an_error():
    src = dag('EmptyOperator(task_id="a")\n').replace(
        "import pendulum\n", "import pendulum\nfrom airflow.providers.openai.hooks.openai import OpenAIHook\n")
    for airflow in (2, 3):
        r = check_source(src, airflow=airflow)
        [f] = [f for f in r.findings if f.code == "DC107"]
        assert f.severity == WARNING and "not checked" in f.message
    # a covered provider's unknown module is still an error
    bad = src.replace("airflow.providers.openai.hooks.openai import OpenAIHook",
                      "airflow.providers.standard.operators.bashh import BashOperator")
    assert "DC103" in by_code(bad) and not check_source(bad).ok


@pytest.mark.parametrize("schedule", [
    'CronTriggerTimetable("0 0 1 13 *", timezone="UTC")',
    'CronDataIntervalTimetable("61 * * * *", timezone="UTC")',
])
def test_cron_inside_timetables(schedule):
    [f] = by_code(dag('EmptyOperator(task_id="a")\n', schedule))["DC401"]
    assert f.severity == ERROR
    ok = schedule.replace('"0 0 1 13 *"', '"@daily"').replace('"61 * * * *"', '"0 6 * * 1-5"')
    assert check_source(dag('EmptyOperator(task_id="a")\n', ok)).ok


def test_a_user_class_named_like_a_timetable_is_not_judged():
    src = dag('EmptyOperator(task_id="a")\n', 'Mine("bad cron")').replace(
        "with DAG", "class Mine:\n    def __init__(self, c):\n        pass\n\n\nwith DAG")
    src = src.replace("Mine(", "CronTriggerTimetable(").replace("from airflow.sdk import DAG, Asset, CronTriggerTimetable,",
                                                                 "from airflow.sdk import DAG, Asset,")
    src = src.replace("class Mine", "class CronTriggerTimetable")
    assert "DC401" not in by_code(src)


@pytest.mark.parametrize(("asset", "bad"), [
    ('Asset("s3://bucket/key")', False), ('Asset(name="orders", uri="s3://b/o")', False),
    ('Asset("")', True), ('Asset("airflow://x")', True), ('Asset(name="self")', True), ('Asset("   ")', True),
])
def test_asset_schedules(asset, bad):
    r = check_source(dag('EmptyOperator(task_id="a")\n', f"[{asset}]"))
    assert ("DC403" in [f.code for f in r.findings]) is bad and r.ok is not bad


def test_operator_arguments_wherever_the_operator_is_built():
    src = dag("""\
        for t in TABLES:
            PythonOperator(task_id=f"load_{t}", python_callable=print, op_kwarg={"t": t})
        by_name = {t: PythonOperator(task_id=f"x_{t}", python_callable=print, op_kwarg={}) for t in TABLES}
        made = [make(i) for i in range(3)]
        m = PythonOperator.partial(task_id="m", python_callable=print, op_kwarg={}).expand(op_args=[[1], [2]])
        """).replace("with DAG", 'import os\nTABLES = os.environ.get("T", "a,b").split(",")\n\n\ndef make(i):\n'
                     '    return PythonOperator(task_id=f"h{i}", python_callable=print, op_kwarg={})\n\n\nwith DAG')
    found = by_code(src)["DC201"]
    # one finding per call site (loop, dict comprehension, helper, .partial()), however often it runs
    assert sorted(f.line for f in found) == sorted({f.line for f in found}) and len(found) == 4
    assert all("op_kwargs" in f.hint for f in found)


def test_arguments_of_an_operator_imported_through_a_deprecated_path():
    src = dag('EmptyOperator(task_id="a", retires=2)\n').replace(
        "from airflow.providers.standard.operators.empty import EmptyOperator", "from airflow.operators.empty import EmptyOperator")
    assert {"DC105", "DC201"} <= set(by_code(src))


def test_lint_air301_on_a_path_that_still_loads_is_a_warning():
    src = ("from airflow.operators.python import get_current_context\nfrom airflow.utils.dates import days_ago\n"
           "get_current_context()\ndays_ago(1)\n")
    sev = {f.message.split("`")[1]: f.severity for f in lint_source(src, airflow=3) if f.code == "AIR301"}
    assert sev == {"airflow.operators.python.get_current_context": WARNING, "airflow.utils.dates.days_ago": ERROR}


def test_deprecation_codes_are_warning_rules():
    for code in DEPRECATION_CODES:
        assert code.startswith("AIR") or RULES[code].severity == WARNING
