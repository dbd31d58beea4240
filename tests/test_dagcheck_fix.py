"""dagcheck's own fix: the imports DC102 findings name, added; never a worse file."""

from __future__ import annotations

from airflow_net.dagcheck import check_source
from airflow_net.dagcheck.fix import fix_imports

MISSING = '''"""A DAG that forgot two imports."""
from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="d", start_date=datetime(2024, 1, 1), schedule=None):
    a = EmptyOperator(task_id="a")
    b = SQLExecuteQueryOperator(task_id="b", conn_id="warehouse", sql="SELECT 1")
    c = EmptyOperator(task_id="c")
    chain(a, b, c)
'''


def test_the_hinted_imports_are_added_after_the_leading_ones_and_the_dag_passes() -> None:
    before = check_source(MISSING, airflow=3)
    assert sorted(f.code for f in before.errors) == ["DC102", "DC102"]
    fixed = fix_imports(MISSING, airflow=3, report=before)
    assert fixed.report.ok and check_source(fixed.source, airflow=3).ok
    assert len(fixed.added) == 2 and all(line.startswith("from ") for line in fixed.added)
    lines = fixed.source.split("\n")
    # after the docstring and the imports that open the file, before the code; the rest untouched
    at = lines.index(fixed.added[0])
    assert lines[at - 1].startswith("from airflow.providers.standard") and lines[at + 2] == ""
    assert [x for x in lines if x not in fixed.added] == MISSING.split("\n")


def test_nothing_to_fix_leaves_the_source_as_it_is() -> None:
    ok = MISSING.replace("SQLExecuteQueryOperator(task_id=\"b\", conn_id=\"warehouse\", sql=\"SELECT 1\")",
                         "EmptyOperator(task_id=\"b\")").replace("    chain(a, b, c)\n", "    a >> b >> c\n")
    assert fix_imports(ok, airflow=3).source == ok and fix_imports(ok, airflow=3).added == []
    broken = "from airflow.sdk import DAG\nwith DAG(dag_id='d'\n"  # DC001: nothing dagcheck can add fixes it
    assert fix_imports(broken, airflow=3).source == broken
    undefined = MISSING.replace("chain(a, b, c)", "a >> zz")  # DC101: no import names `zz`
    assert fix_imports(undefined, airflow=3).report.errors[0].code in ("DC101", "DC102")
    assert "zz" in fix_imports(undefined, airflow=3).source
