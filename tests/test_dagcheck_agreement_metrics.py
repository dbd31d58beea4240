"""The agreement metrics per (written for, judged as) cell and per code, on hand-built rows (no Airflow needed)."""

from __future__ import annotations

from airflow_net.dagcheck.agreement import Row, _unchecked, metrics, table


def row(name, written_for, judged_as, static_ok, airflow_ok, mutation=None, codes=(), expected=None, unchecked=False):
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
        row("3/e.py", 3, 3, True, False, codes=["DC107"], unchecked=True),  # left out
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


def test_unchecked_only_when_the_missing_module_is_what_dagcheck_could_not_check():
    assert _unchecked(["DC107"], "DC901: ModuleNotFoundError: No module named 'airflow.providers.openai'")
    assert _unchecked(["DC106"], "DC901: ModuleNotFoundError: No module named 'acme_internal'")
    assert not _unchecked(["DC106"], "DC901: ModuleNotFoundError: No module named 'airflow.sdk'")
    assert not _unchecked(["DC107"], "DC901: TypeError: bad argument")
    assert not _unchecked([], "DC901: ModuleNotFoundError: No module named 'acme_internal'")
