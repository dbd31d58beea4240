"""dagcheck's own fix: the imports DC102 findings name, added; never a worse file."""

from __future__ import annotations

from airflow_net.dagcheck import check_source
from airflow_net.dagcheck.fix import fix_source

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
    fixed = fix_source(MISSING, airflow=3, report=before)
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
    assert fix_source(ok, airflow=3).source == ok and fix_source(ok, airflow=3).added == []
    broken = "from airflow.sdk import DAG\nwith DAG(dag_id='d'\n"  # DC001: nothing dagcheck can add fixes it
    assert fix_source(broken, airflow=3).source == broken
    undefined = MISSING.replace("chain(a, b, c)", "a >> zz")  # DC101: no import names `zz`
    assert fix_source(undefined, airflow=3).report.errors[0].code in ("DC101", "DC102")
    assert "zz" in fix_source(undefined, airflow=3).source


def test_an_airflow_3_import_in_a_file_for_airflow_2_moves_to_the_path_airflow_2_has() -> None:
    source = '''from datetime import datetime

from airflow.sdk import DAG, TaskGroup, task
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="d", start_date=datetime(2024, 1, 1), schedule=None):
    with TaskGroup("g"):
        a = EmptyOperator(task_id="a")
'''
    before = check_source(source, airflow=2)
    assert {f.code for f in before.errors} == {"DC103"}
    fixed = fix_source(source, airflow=2, report=before)
    assert fixed.report.ok, fixed.report.errors
    assert "airflow.sdk" not in fixed.source  # each of its three names moved to the path Airflow 2 has
    assert fixed.added == ["from airflow import DAG", "from airflow.utils.task_group import TaskGroup",
                           "from airflow.decorators import task"]
    kept = source.replace("from airflow.sdk import DAG, TaskGroup, task", "from airflow.sdk import DAG, TaskGroup, zz")
    partly = fix_source(kept, airflow=2)  # a name with no replacement stays where it was
    assert "from airflow.sdk import zz" in partly.source and "from airflow import DAG" in partly.added
    assert fix_source(source, airflow=3).source == source  # right for Airflow 3: nothing to do


def test_a_task_made_its_own_upstream_loses_the_repeat() -> None:
    source = MISSING.replace("SQLExecuteQueryOperator(task_id=\"b\", conn_id=\"warehouse\", sql=\"SELECT 1\")",
                             "EmptyOperator(task_id=\"b\")").replace("    chain(a, b, c)\n",
                                                                     "    a >> b >> b >> c\n    chain(c, c)\n")
    before = check_source(source, airflow=3)
    assert sorted(f.code for f in before.errors) == ["DC102", "DC302"]  # chain is not imported either
    fixed = fix_source(source, airflow=3, report=before)
    assert fixed.report.ok and "    a >> b >> c\n    chain(c)\n" in fixed.source
    assert fixed.deduped and fixed.fixes == [*fixed.added, "dropped the repeat in a task made its own upstream"]
    loop = source.replace("    a >> b >> b >> c\n    chain(c, c)\n", "    a >> b >> a\n")  # a real cycle: kept
    assert fix_source(loop, airflow=3).source == loop


def test_a_repeat_that_only_shows_once_chain_is_imported_is_fixed_in_the_next_round() -> None:
    # chain is not imported, so dagcheck cannot read chain(b, b) until the first round adds the import; the
    # second round then drops the repeat
    source = MISSING.replace("SQLExecuteQueryOperator(task_id=\"b\", conn_id=\"warehouse\", sql=\"SELECT 1\")",
                             "EmptyOperator(task_id=\"b\")").replace("    chain(a, b, c)\n", "    chain(a, b, b, c)\n")
    before = check_source(source, airflow=3)
    assert [f.code for f in before.errors] == ["DC102"]
    fixed = fix_source(source, airflow=3, report=before)
    assert fixed.report.ok and check_source(fixed.source, airflow=3).ok
    assert "    chain(a, b, c)\n" in fixed.source and fixed.deduped and len(fixed.added) == 1


def test_a_chain_of_lists_that_pairs_a_task_with_itself_becomes_the_edges_it_means() -> None:
    """The tiny model's most common cycle (26 of 33 DC302 answers): `chain([a, b], [a, c])` pairs a with a."""
    base = MISSING.replace("SQLExecuteQueryOperator(task_id=\"b\", conn_id=\"warehouse\", sql=\"SELECT 1\")",
                           "EmptyOperator(task_id=\"b\")").replace("from airflow.sdk import DAG", "from airflow.sdk import DAG, chain")
    cases = {
        "    chain([a, b], [a, c])\n": "    b >> c\n",  # pairwise: a >> a (dropped) and b >> c
        "    chain([a, b], [b, b])\n": "    a >> b\n",
        "    chain([a, c], c)\n": "    a >> c\n",  # a list next to a task: each of its tasks
        "    chain(a, [a, b], [c, c])\n": "    a >> [b, c]\n    b >> c\n",  # a >> a, a >> b, a >> c, b >> c
        "    chain(a, [a], a)\n": "    pass\n",  # nothing left: the block still holds a statement
        "    chain([a], [a])\n": "    chain([a])\n",  # the repeat next to itself goes first (as `chain(c, c)`)
    }
    for line, want in cases.items():
        source = base.replace("    chain(a, b, c)\n", line)
        assert [f.code for f in check_source(source, airflow=3).errors] == ["DC302"], line
        fixed = fix_source(source, airflow=3)
        assert fixed.report.ok and fixed.deduped, (line, fixed.report.errors)
        assert fixed.source == source.replace(line, want), line
    # lists of unequal length are another error (DC308): not rewritten
    uneven = base.replace("    chain(a, b, c)\n", "    chain([a, b], [a, b, c])\n")
    assert fix_source(uneven, airflow=3).source == uneven


def test_an_xcom_pull_of_a_grouped_task_by_its_bare_id_gets_the_full_id() -> None:
    source = '''from airflow.sdk import DAG, TaskGroup
from airflow.providers.standard.operators.python import PythonOperator


def _load(ti):
    return ti.xcom_pull(task_ids="download")


with DAG(dag_id="d", schedule=None):
    with TaskGroup("extract") as extract:
        download = PythonOperator(task_id="download", python_callable=print)
    load = PythonOperator(task_id="load", python_callable=_load)
    extract >> load
'''
    before = check_source(source, airflow=3)
    assert [f.code for f in before.errors] == ["DC303"]  # Airflow's DagBag reports it too (airflow tier)
    fixed = fix_source(source, airflow=3, report=before)
    assert fixed.report.ok and 'ti.xcom_pull(task_ids="extract.download")' in fixed.source
    assert fixed.fixes == ["XCom pull on line 6: 'download' -> 'extract.download'"]
    assert fixed.source.replace("extract.download", "download") == source  # nothing else touched


def test_a_task_called_like_a_function_becomes_the_task_itself() -> None:
    src = ("from airflow.sdk import DAG\nfrom airflow.providers.standard.operators.bash import BashOperator\n\n"
           'with DAG("d") as dag:\n    t = BashOperator(task_id="t", bash_command="x")\n'
           '    v = BashOperator(task_id="v", bash_command="y")\n    u = t()\n    u >> v\n')
    assert [f.code for f in check_source(src, airflow=3).errors] == ["DC309"]
    fixed = fix_source(src, airflow=3)
    assert fixed.source == src.replace("u = t()", "u = t") and fixed.report.ok
    assert fixed.fixes == ["task called on line 7: t() -> t"]
    # with arguments, what they were for is not known: left as it is (and still an error)
    with_args = src.replace("u = t()", "u = t(1)")
    assert fix_source(with_args, airflow=3).source == with_args


UNKNOWN = '''from airflow.sdk import DAG, chain
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("d") as dag:
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    c = EmptyOperator(task_id="c")

    wait_for_upstream >> a >> [b, ghost]
    chain(ghost, [ghost], b, c)
    [ghost] >> c
'''


def test_with_drop_unknown_a_task_nothing_binds_leaves_the_dependencies() -> None:
    """The tiny model refers to tasks it never wrote (`wait_for_upstream >> load`: a third of its answers' DC101);
    for a model's answer (generate.autofix) the name leaves each dependency, and the file loads."""
    assert {f.code for f in check_source(UNKNOWN, airflow=3).errors} == {"DC101"}
    fixed = fix_source(UNKNOWN, airflow=3, drop_unknown=True)
    assert fixed.report.ok, fixed.report.errors
    body = fixed.source.split("\n")
    assert body[8:11] == ["    a >> [b]", "    chain(b, c)", ""]  # an emptied list goes; a lone operand with it
    assert len(body) == len(UNKNOWN.split("\n")) and body[:8] == UNKNOWN.split("\n")[:8]
    assert fixed.dropped == ["line 9: dropped 'ghost', 'wait_for_upstream'", "line 10: dropped 'ghost'",
                             "line 11: dropped 'ghost' (the statement with it: fewer than two tasks left)"]
    assert all(line.startswith("unknown task in a dependency on line") for line in fixed.fixes)
    # a person's file (validate --fix): a name nothing binds is a typo to correct, not a dependency to lose
    assert fix_source(UNKNOWN, airflow=3).source == UNKNOWN


def test_drop_unknown_keeps_a_name_the_file_binds_and_names_outside_dependencies() -> None:
    # `late` is bound somewhere (in a function: not where the dependency reads it, DC101 all the same): which task
    # was meant is not sure, so nothing is dropped
    late = UNKNOWN.replace("    wait_for_upstream >> a >> [b, ghost]\n", "    late >> a\n")
    late = late.replace("    chain(ghost, [ghost], b, c)\n    [ghost] >> c\n", "") + "\n\ndef f():\n    late = 1\n"
    assert "DC101" in {f.code for f in check_source(late, airflow=3).errors}
    assert fix_source(late, airflow=3, drop_unknown=True).source == late
    # an unknown name in an operator's arguments is not a dependency: left for the model's repair to see
    arg = UNKNOWN.replace('c = EmptyOperator(task_id="c")', 'c = EmptyOperator(task_id=ghost_id)')
    arg = arg.replace("    wait_for_upstream >> a >> [b, ghost]\n    chain(ghost, [ghost], b, c)\n    [ghost] >> c\n", "")
    assert fix_source(arg, airflow=3, drop_unknown=True).source == arg
