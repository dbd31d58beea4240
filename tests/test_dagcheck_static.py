"""Static tiers of dagcheck: each defect gets its own code; structure is read back exactly."""

from __future__ import annotations

import textwrap

import pytest

from airflow_net.dagcheck import check_source, extract_structure

AF3 = """
import pendulum
from airflow.sdk import DAG, TaskGroup, task
from airflow.providers.standard.operators.bash import BashOperator

with DAG("etl", schedule="0 6 * * *", start_date=pendulum.datetime(2024, 1, 1), catchup=False) as dag:
    extract = BashOperator(task_id="extract", bash_command="echo extract")
    with TaskGroup("transform") as tg:
        clean = BashOperator(task_id="clean", bash_command="echo clean")
        enrich = BashOperator(task_id="enrich", bash_command="echo {{ ti.xcom_pull(task_ids='extract') }}")
        clean >> enrich

    @task
    def load(rows):
        return rows

    @task.bash
    def notify():
        return "echo done"

    extract >> tg >> load(notify())
"""

AF2 = """
from datetime import datetime, timedelta
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator

def _pull(ti):
    return ti.xcom_pull(task_ids="a")

with DAG(dag_id="legacy", schedule_interval="@daily", start_date=datetime(2024, 1, 1),
         default_args={"retries": 2, "retry_delay": timedelta(minutes=5)}) as dag:
    a = BashOperator(task_id="a", bash_command="echo a")
    b = PythonOperator(task_id="b", python_callable=_pull)
    c = BashOperator(task_id="c", bash_command="echo c")
    a >> [b, c]
"""


def codes(src: str, **kw) -> list[str]:
    return [f.code for f in check_source(textwrap.dedent(src), **kw).findings]


def test_clean_dags_pass_and_structure_is_exact():
    r = check_source(AF3)
    assert r.ok, r.to_dict()
    assert r.tiers["parse"] == "pass" and r.tiers["static"] == "pass"
    s = extract_structure(AF3)
    assert s.dag_id == "etl" and s.schedule == "0 6 * * *"
    assert s.tasks == {"extract": "BashOperator", "transform.clean": "BashOperator",
                       "transform.enrich": "BashOperator", "notify": "@task.bash", "load": "@task"}
    assert s.edges == {("extract", "transform.clean"), ("transform.clean", "transform.enrich"),
                       ("transform.enrich", "load"), ("notify", "load")}
    r2 = check_source(AF2, airflow=2)
    assert r2.ok, r2.to_dict()
    s2 = extract_structure(AF2)
    assert s2.schedule == "@daily" and s2.edges == {("a", "b"), ("a", "c")}


def test_syntax_error_has_line():
    r = check_source("from airflow.sdk import DAG\nwith DAG('x') as d:\n    a = (\n")
    assert not r.ok and r.findings[0].code == "DC001" and r.findings[0].line >= 3
    assert r.tiers["parse"] == "fail" and r.tiers["static"] == "skipped"


@pytest.mark.parametrize(
    "old,new,code",
    [
        ("from airflow.providers.standard.operators.bash import BashOperator\n", "", "DC102"),  # missing import
        ("bash_command=\"echo clean\"", "bash_command=undefined_cmd", "DC101"),
        ("notify = BashOperator", "notify = BashOperator", "DC301"),
        ("task_ids='extract'", "task_ids='nope'", "DC303"),
        ("\"0 6 * * *\"", "\"0 61 * * *\"", "DC401"),
        ("from airflow.sdk import DAG, TaskGroup, task", "from airflow.sdk import DAG, TaskGroup, task\n"
         "from airflow.operators.dummy import DummyOperator", "DC104"),
    ],
)
def test_single_defects(old, new, code):
    src = AF3.replace(old, new) if old != "notify = BashOperator" else (
        AF3 + '    BashOperator(task_id="extract", bash_command="echo again")\n')
    assert src != AF3
    got = codes(src)
    assert code in got, got
    assert check_source(src).ok is False


def test_cycle():
    src = AF3.replace("extract >> tg >> load(notify())", "l = load(notify())\n    extract >> tg >> l >> extract")
    assert "DC302" in codes(src)


def test_task_outside_dag_and_no_dag():
    src = """
    from airflow.sdk import DAG
    from airflow.providers.standard.operators.bash import BashOperator
    import pendulum
    with DAG("d", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):
        a = BashOperator(task_id="a", bash_command="x")
    b = BashOperator(task_id="b", bash_command="x")
    """
    assert codes(src) == ["DC304"]
    assert "DC306" in codes("from airflow.sdk import dag\n@dag(schedule=None)\ndef f():\n    pass\n")
    assert codes("from airflow.sdk import dag\n@dag(schedule=None)\ndef f():\n    pass\nf()\n") == []


def test_taskflow_ids_are_made_unique_and_groups_suffixed():
    src = """
    import pendulum
    from airflow.sdk import DAG, task, task_group

    @task
    def one(x):
        return x

    @task_group
    def grp(i):
        one(i)

    with DAG(dag_id="u", schedule=None, start_date=pendulum.datetime(2021, 1, 1)) as dag:
        a = one(1)
        b = one.override(task_id="custom")(a)
        c = one(2)
        for i in range(2):
            a >> grp(i)
    """
    s = extract_structure(textwrap.dedent(src))
    assert set(s.tasks) == {"one", "custom", "one__1", "grp.one", "grp__1.one"}
    assert ("one", "custom") in s.edges and ("one", "grp.one") in s.edges and ("one", "grp__1.one") in s.edges
    assert check_source(textwrap.dedent(src)).ok


def test_dependency_forms():
    src = """
    import pendulum
    from airflow.sdk import DAG, chain, cross_downstream, Label
    from airflow.providers.standard.operators.empty import EmptyOperator as Empty

    with DAG(dag_id="deps", start_date=pendulum.datetime(2021, 1, 1)) as dag:
        a, b, c, d, e, f = [Empty(task_id=x) for x in "abcdef"]
        a >> [b, c] >> d
        d << e
        chain(a, [b, c], [e, f])
        cross_downstream([e], [f])
        f.set_downstream(Empty(task_id="g"))
        a >> Label("why") >> f
    """
    s = extract_structure(textwrap.dedent(src))
    assert set(s.tasks.values()) == {"EmptyOperator"}  # the name as imported, not the alias
    assert s.edges == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("e", "d"), ("b", "e"), ("c", "f"),
                       ("e", "f"), ("f", "g"), ("a", "f")}
    assert "DC308" in codes("from airflow.sdk import DAG\nfrom airflow.providers.standard.operators.empty import "
                            "EmptyOperator as E\nwith DAG('x') as d:\n    [E(task_id='a')] >> [E(task_id='b')]\n")


def test_an_operators_task_called_like_a_function_is_a_type_error():
    # real Airflow (DagBag, 2.10 and 3.3) on model answers: TypeError: 'BashOperator' object is not callable
    head = ("from airflow.sdk import DAG, task\nfrom airflow.providers.standard.operators.bash import BashOperator\n"
            "with DAG('x') as d:\n    t = BashOperator(task_id='t', bash_command='x')\n")
    assert "DC309" in codes(head + "    u = t()\n") and "DC309" in codes(head + "    t() >> t\n")
    # a @task function is called, and a task used as a task is fine
    assert "DC309" not in codes(head + "    @task\n    def f():\n        return 1\n\n    y = f()\n    t >> y\n")


def test_a_literal_set_up_or_downstream_of_a_task_is_an_error():
    # real Airflow (DagBag, 2.10.5 and 3.3.2): AttributeError: 'int' object has no attribute 'update_relative',
    # for `chain(2, t)` (a model answer), `1 >> t` and `t >> "b"` alike
    head = ("from airflow.sdk import DAG, chain\nfrom airflow.providers.standard.operators.empty import EmptyOperator\n"
            "with DAG('x') as d:\n    t = EmptyOperator(task_id='t')\n    u = EmptyOperator(task_id='u')\n")
    for line in ("chain(2, t)", "chain(t, [u], 'x')", "1 >> t", "t >> 'b'", "t << None"):
        assert "DC308" in codes(head + f"    {line}\n"), line
    # numbers and strings elsewhere, and dependencies between tasks, are fine
    for line in ("x = 2 >> 1", "t >> u", "chain(t, u)", "n = len('ab') >> 1"):
        assert "DC308" not in codes(head + f"    {line}\n"), line


def test_a_name_read_before_the_statement_that_assigns_it_is_a_name_error():
    # real Airflow 3.3.2 (DagBag): NameError: name 'store' is not defined, for a model answer's `store >> a` one
    # line above `store = ...`; "bound somewhere in reach" (pyflakes' rule) cannot see it
    head = "from airflow.sdk import DAG\nfrom airflow.providers.standard.operators.empty import EmptyOperator\n"
    late = head + "with DAG('x') as d:\n    a = EmptyOperator(task_id='a')\n    store >> a\n    store = EmptyOperator(task_id='s')\n"
    report = check_source(late, airflow=3)
    assert [(f.code, f.line) for f in report.errors] == [("DC101", 5)]
    assert "before the statement that assigns it" in report.errors[0].message and "store" in report.errors[0].hint
    # a decorator runs when its def does
    assert "DC101" in codes(head + "@late\ndef f():\n    pass\n\n\ndef late(fn):\n    return fn\n")
    # code that may not run, or runs later, is not read: a branch, a try, a function, a lambda, a comprehension's
    # own variable; and a name bound earlier in a branch counts from there on
    for src in ("if False:\n    store >> a\nstore = 1\na = 2\n", "def f():\n    return late\n\n\nlate = 1\n",
                "g = lambda: late\nlate = 1\n", "xs = [i for i in range(3)]\ni = 1\n",
                "try:\n    import foo\nexcept ImportError:\n    foo = None\nprint(foo)\n",
                "for t in range(2):\n    print(t)\nprint(t)\n"):
        assert "DC101" not in codes(head + src), src
    # Airflow's own modules and example DAGs (2,824 files) and 8,000 modules of this venv: none flagged


def test_airflow_version_matters():
    src = AF2.replace("from airflow.operators.bash import BashOperator\n", "")
    src = src.replace("BashOperator(", "DummyOperator(").replace(
        "from airflow.operators.python", "from airflow.operators.dummy import DummyOperator\nfrom airflow.operators.python")
    assert "DC104" in codes(src, airflow=3)
    assert "DC104" not in codes(src, airflow=2)
    assert "DC201" in codes(AF2, airflow=3)  # schedule_interval is gone in Airflow 3


def test_conn_ids():
    src = AF3.replace('bash_command="echo extract"', 'bash_command="x", ssh_conn_id="prod_db"')
    assert "DC402" in codes(src, conn_ids={"warehouse"})
    assert "DC402" not in codes(src, conn_ids={"prod_db"})
    assert "DC402" not in codes(src)


@pytest.mark.parametrize("text", ["", "\x00", "(" * 300 + ")" * 300, "def f(:\n", "x = 1\n" * 3, "é" * 10])
def test_odd_inputs_get_a_verdict(text):
    r = check_source(text)
    assert isinstance(r.ok, bool) and not r.ok
    assert extract_structure(text) is None


def test_operator_arguments_against_the_api_index():
    src = AF3.replace('clean = BashOperator(task_id="clean", bash_command="echo clean")',
                      'clean = BashOperator(task_id="clean")')
    r = check_source(src)
    [f] = [f for f in r.findings if f.code == "DC202"]
    assert "bash_command" in f.message and f.line == 9
    # default_args may supply it, as Airflow applies them to every operator
    src2 = src.replace("catchup=False)", "catchup=False, default_args={'bash_command': 'echo'})")
    assert "DC202" not in codes(src2)
    src3 = AF3.replace('bash_command="echo extract"', 'bash_comand="echo extract"')
    [f3] = [f for f in check_source(src3).findings if f.code == "DC201"]
    assert "bash_comand" in f3.message and "bash_command" in f3.hint


def test_ids_groups_and_deprecations():
    assert "DC307" in codes(AF3.replace('task_id="extract"', 'task_id="bad id!"'))
    dup_group = AF3.replace('    @task\n    def load', '    with TaskGroup("transform"):\n        pass\n\n    @task\n    def load')
    assert "DC305" in codes(dup_group)
    old = AF3.replace("from airflow.providers.standard.operators.bash import BashOperator",
                      "from airflow.operators.bash import BashOperator")
    r = check_source(old)
    assert r.ok and [f.code for f in r.findings] == ["DC105"]  # still works in Airflow 3: a warning
    assert "from airflow.providers.standard.operators.bash import BashOperator" in r.findings[0].hint


def test_assets_and_mapped_tasks_define_dags():
    src = """
    from airflow.sdk import asset, dag, task
    from airflow.providers.standard.operators.bash import BashOperator

    @asset(schedule="@daily")
    def raw_orders():
        return 1

    @dag(schedule=None)
    def mapped():
        @task
        def nums():
            return [1, 2]
        @task
        def add(x, y):
            return x + y
        BashOperator.partial(task_id="echo").expand(bash_command=["a", "b"]) >> add.partial(y=1).expand(x=nums())
    mapped()
    """
    r = check_source(textwrap.dedent(src))
    assert r.ok, r.to_dict()
    assert set(r.dag_ids) == {"raw_orders", "mapped"}
    s = extract_structure(textwrap.dedent(src))
    assert s.dag_id == "raw_orders" and s.tasks == {"raw_orders": "@asset"} and s.schedule == "@daily"


def test_nested_groups_and_prefix_group_id():
    src = """
    import pendulum
    from airflow.sdk import DAG, TaskGroup
    from airflow.providers.standard.operators.empty import EmptyOperator

    with DAG("nest", start_date=pendulum.datetime(2024, 1, 1), schedule=None) as dag:
        start = EmptyOperator(task_id="start")
        with TaskGroup("outer") as outer:
            with TaskGroup("inner") as inner:
                a = EmptyOperator(task_id="a")
            with TaskGroup("flat", prefix_group_id=False) as flat:
                b = EmptyOperator(task_id="b")
            inner >> flat
        end = EmptyOperator(task_id="end")
        end.set_upstream(outer)
        start >> outer
    """
    s = extract_structure(textwrap.dedent(src))
    # As Airflow 3.3 builds it (checked with DagBag): prefix_group_id=False drops every prefix of its tasks.
    assert set(s.tasks) == {"start", "outer.inner.a", "b", "end"}
    assert s.edges == {("outer.inner.a", "b"), ("b", "end"), ("start", "outer.inner.a")}


OPAQUE = textwrap.dedent("""\
    from datetime import datetime
    from airflow import DAG
    from acme_provider.operators import AcmeOperator, AcmeSensor

    with DAG("acme", start_date=datetime(2024, 1, 1), schedule=None) as dag:
        sync = AcmeOperator(task_id="sync", acme_conn_id="acme_default")
        wait = AcmeSensor(task_id="wait", run_id="{{ ti.xcom_pull(task_ids='sync') }}")
        sync >> wait
""")


def test_operators_of_packages_outside_the_index_are_tasks_with_unchecked_arguments():
    # the package is not checked (a warning), its operators' arguments are not judged, the xcom id is theirs
    assert {c for c in codes(OPAQUE, airflow=2) if c.startswith("DC")} == {"DC106"}
    assert "DC303" in codes(OPAQUE.replace("task_ids='sync'", "task_ids='synk'"), airflow=2)
    # they are tasks of the DAG: a cycle through them and a duplicate id are errors, as Airflow finds them
    assert "DC302" in codes(OPAQUE + "    wait >> sync\n", airflow=2)
    assert "DC301" in codes(OPAQUE.replace('task_id="wait"', 'task_id="sync"'), airflow=3)
    # outside any DAG it is an orphan, unless it is given a dag= we cannot resolve
    orphan = OPAQUE + "late = AcmeOperator(task_id='late')\n"
    assert "DC304" in codes(orphan, airflow=2)
    assert "DC304" not in codes(orphan.replace("task_id='late'", "task_id='late', dag=get_dag()"), airflow=2)


FALLBACK = textwrap.dedent("""\
    from datetime import datetime
    from airflow import DAG
    try:  # Airflow 3
        from airflow.providers.standard.operators.empty import EmptyOperator
    except ImportError:  # Airflow 2
        from airflow.operators.empty import EmptyOperator

    with DAG("d", start_date=datetime(2024, 1, 1), schedule=None) as dag:
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b")
        a >> b
""")


@pytest.mark.parametrize("airflow", [2, 3])
def test_import_fallbacks_follow_the_block_the_target_airflow_runs(airflow):
    # whichever block runs, EmptyOperator is known: its tasks, their cycle and a @dag imported this way count
    assert not [c for c in codes(FALLBACK, airflow=airflow) if c.startswith("DC3")]
    assert "DC302" in codes(FALLBACK + "    b >> a\n", airflow=airflow)
    deco = textwrap.dedent("""\
        from datetime import datetime
        try:
            from airflow.sdk import dag, task
        except ImportError:
            from airflow.decorators import dag, task

        @dag(schedule=None, start_date=datetime(2024, 1, 1))
        def d():
            @task
            def t():
                pass
            t()

        d()
    """)
    assert not [c for c in codes(deco, airflow=airflow) if c.startswith("DC3")]
    # the fallback block never runs where the first import loads: its deprecated path is no warning there
    assert "DC105" not in codes(FALLBACK, airflow=3) and "DC105" not in codes(deco, airflow=3)
    # ... but a fallback that runs (Airflow 2 has no airflow.sdk) is checked like any import
    bad = deco.replace("from airflow.decorators import dag, task", "from airflow.decoratorz import dag, task")
    assert ("DC103" in codes(bad, airflow=airflow)) == (airflow == 2)
