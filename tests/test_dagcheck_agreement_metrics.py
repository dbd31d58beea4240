"""The agreement metrics per (written for, judged as) cell and per code, on hand-built rows (no Airflow needed)."""

from __future__ import annotations

from airflow_net.dagcheck.agreement import Row, metrics, table, unchecked_reason


def row(name, written_for, judged_as, static_ok, airflow_ok, mutation=None, codes=(), expected=None, unchecked=""):
    return Row(name=name, airflow=judged_as, mutation=mutation, expected=expected, static_ok=static_ok,
               airflow_ok=airflow_ok, static_codes=list(codes), written_for=written_for, unchecked=unchecked)


def test_cells_codes_false_alarms_and_misses():
    rows = [
        row("2/a.py", 2, 2, True, True),
        row("2/a.py", 2, 3, True, True, codes=["DC105"]),  # an Airflow-2 path Airflow 3 still loads
        row("2/b.py", 2, 3, False, True, codes=["DC104"]),  # a false alarm
        row("3/c.py#cycle", 3, 3, False, False, mutation="cycle", codes=["DC302"], expected="DC302"),
        row("3/c.py#cycle", 3, 2, False, False, mutation="cycle", codes=["DC103"], expected="DC302"),
        row("3/d.py", 3, 3, True, False),  # a miss
        row("3/e.py", 3, 3, True, False, codes=["DC107"], unchecked="provider outside the index"),  # left out
    ]
    m = metrics(rows)
    assert set(m["by_cell"]) == {"2->2", "2->3", "3->2", "3->3"} and m["unchecked"] == 1
    assert m["by_cell"]["2->3"]["false_alarms"] == ["2/b.py"] and m["by_cell"]["2->3"]["agreement"] == 0.5
    assert m["by_cell"]["3->3"]["misses"] == ["3/d.py"] and m["by_cell"]["3->3"]["n"] == 2
    assert m["min_cell_agreement"] == 0.5 and m["false_alarms_on_loaded_examples"] == 1
    # across versions the mutant may fail earlier for another reason: its own code is required only at home
    assert m["mutants_with_expected_code"] == m["mutants"] == 2
    assert m["by_code"]["DC104"] == {"files": 1, "agree": 0, "false_alarm": 1}
    text = table(rows)
    assert "| 2->3 | 2 | 50.00% | 1 | 0 |" in text and "2->3 false alarms: 2/b.py" in text
    assert m["unchecked_by_reason"] == {"provider outside the index": 1}
    assert "unchecked (provider outside the index): 1" in text


def test_unchecked_only_when_the_dagbag_failed_on_something_dagcheck_could_not_check():
    own = "from acme_provider.operators import AcmeOperator\nfrom airflow import DAG\n"
    msg = "DC901: ModuleNotFoundError: No module named '{}'"
    assert unchecked_reason(own, ["DC107"], msg.format("airflow.providers.openai"))
    assert unchecked_reason(own, ["DC106"], msg.format("acme_internal"))
    # the file's own package imports airflow.sdk (Airflow 3) while judged as Airflow 2: the DAG file does not
    assert unchecked_reason(own, ["DC106"], msg.format("airflow.sdk")) == "fails inside a package dagcheck does not check"
    assert unchecked_reason(own, ["DC106"], "DC901: ImportError: cannot import name 'apply_defaults' from "
                            "'airflow.utils.decorators' (unknown location)")
    # ... but when the DAG file itself imports the missing Airflow module, that is dagcheck's business
    assert not unchecked_reason(own + "from airflow.sdk import dag\n", ["DC106"], msg.format("airflow.sdk"))
    assert not unchecked_reason(own, ["DC107"], "DC901: TypeError: bad argument")
    assert not unchecked_reason(own, [], msg.format("acme_internal"))
    assert unchecked_reason(own, [], "DC901: AttributeError: task decorator 'llm' not found")
    assert unchecked_reason(own, [], "DC901: AirflowNotFoundException: The conn_id `x` isn't defined")
