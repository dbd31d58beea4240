"""The id-copying constraint: which identifiers a request names, and which tokens it allows where."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_net.serve.copy_ids import (
    BracketGuard,
    IdConstraint,
    NameGuard,
    VocabIndex,
    apply_rule,
    constrained_argmax,
    request_group_members,
    request_id_roles,
    request_identifiers,
)


def test_request_identifiers_takes_backticked_and_snake_case_ids_not_prose() -> None:
    text = ("hi, i need a dag called invoices_sync, every 20 min. fetch_invoices pulls them from the billing api "
            "(see docs.example.com/api_v2), then `store` writes them to postgres.")
    # one backticked id: bare snake_case words count too (a person does not quote them)
    assert request_identifiers(text) == ("invoices_sync", "fetch_invoices", "store")
    assert request_identifiers("in TaskGroup `extract`: `extract.fetch_x`") == ("extract", "extract.fetch_x", "fetch_x")
    assert request_identifiers("A DAG that runs every day at 6:00: extract, then transform.") == ()
    # a request that quotes its ids: only those (pg_dump is prose there)
    quoted = "Name it `nightly_db_backup`. First, dump inventory_db with pg_dump (`dump_inventory_db`)."
    assert request_identifiers(quoted) == ("nightly_db_backup", "dump_inventory_db")


@pytest.mark.parametrize("text, dag", [
    ("Need a DAG called `orders_sync` every day: `pull_orders` -> `load_orders`.", "orders_sync"),
    ("Our team wants a pipeline. The DAG id should be `price_monitoring`. First `scrape_initech`.", "price_monitoring"),
    ("First `probe_api`, then `store_health`. Use `uptime_probes` as the DAG id.", "uptime_probes"),
    ("Create `weekly_sales_report`, an Airflow 3 DAG that runs weekly: `aggregate_top_products`.", "weekly_sales_report"),
    ("I need a DAG for Airflow 3.x, `crm_claims_sync`, to pull claims: `pull_claims`, `upsert_claims`.", "crm_claims_sync"),
    ("hi, i need a dag called invoices_sync, every 20 min. fetch_invoices, then store_invoices", "invoices_sync"),
    ("wait for the events_ingest DAG to finish (`wait_for_events`), then `compute`. Name it `features_daily`.",
     "features_daily"),
])
def test_request_id_roles_finds_the_dag_id_and_the_groups(text: str, dag: str) -> None:
    roles = request_id_roles(text)
    assert [r for r in roles if r.startswith("dag:")] == [f"dag:{dag}"]
    assert all(r.split(":", 1)[0] in ("dag", "group", "task") for r in roles)
    assert "group:extract" in request_id_roles("`a_b` then `c_d`, both in TaskGroup `extract`. DAG `x_y`.")


# A toy vocabulary: characters, a few merged pieces, and pieces that open a string with an id's start.
VOCAB = ['"', "'", '",', '"\n', "(", "):", "_", "a", "b", "c", "d", "e", "i", "l", "m", "n", "o", "s", "t", "y",
         "load", "load_", "_sales", "sales", '"load', '"my', "my_dag", "daily", "_daily", "x", " ", "="]


@pytest.fixture()
def index() -> VocabIndex:
    return VocabIndex(VOCAB)


def tok(*texts: str) -> set[int]:
    return {VOCAB.index(t) for t in texts}


def test_inside_an_id_string_only_tokens_toward_a_requested_id_are_allowed(index: VocabIndex) -> None:
    c = IdConstraint(index, ("load_sales", "sales_daily"))
    kind, allowed = c.allowed('with DAG(dag_id="load')
    assert kind == "allow" and set(allowed.tolist()) == tok("_", "_sales")
    kind, allowed = c.allowed("    t = EmptyOperator(task_id='sales")
    assert set(allowed.tolist()) == tok("_", "_daily")
    # a complete id: only its closing quote, alone or with the punctuation that ends an argument ('"my' is not)
    kind, allowed = c.allowed('dag_id="load_sales')
    assert set(allowed.tolist()) == tok('"', '",', '"\n')
    # at the start of the string: the first pieces of either id
    kind, allowed = c.allowed('TaskGroup(group_id="')
    assert set(allowed.tolist()) == tok("l", "load", "load_", "s", "sales")


def test_no_constraint_outside_id_places_or_for_a_name_the_request_does_not_have(index: VocabIndex) -> None:
    c = IdConstraint(index, ("load_sales",))
    assert c.allowed("import pendulum\n") is None
    assert c.allowed('bash_command="load') is None  # not an id place
    assert c.allowed('dag_id="zzz') is None  # the model left the request's ids: nothing to steer toward
    assert IdConstraint(index, ()).allowed('dag_id="') is None


def test_a_token_that_opens_the_string_must_open_it_toward_an_id(index: VocabIndex) -> None:
    c = IdConstraint(index, ("load_sales",))
    kind, banned = c.allowed("with DAG(dag_id=")
    assert kind == "ban" and tok('"my') <= set(banned.tolist())
    assert not (tok('"', "'", '"load') & set(banned.tolist()))


def test_taskflow_names_are_ids_too(index: VocabIndex) -> None:
    c = IdConstraint(index, ("load_sales",))
    kind, allowed = c.allowed("@task\ndef load")
    assert set(allowed.tolist()) == tok("_", "_sales")
    kind, allowed = c.allowed("@dag(schedule=None)\n@other\ndef load_sales")
    assert set(allowed.tolist()) == tok("(")  # "):" does not open the parameter list
    assert c.allowed("def load") is None  # a plain helper function is not a task
    # `def` written but not its space: the name must come with it (a token such as "Train" would glue on)
    kind, allowed = c.allowed("@task\ndef")
    assert kind == "allow" and set(allowed.tolist()) == tok(" ")


def test_the_masks_pick_the_best_allowed_token() -> None:
    logits = np.array([5.0, 1.0, 3.0, 2.0])
    assert constrained_argmax(logits, None) == 0
    assert constrained_argmax(logits, ("allow", np.array([1, 3]))) == 3
    assert constrained_argmax(logits, ("ban", np.array([0]))) == 2
    row = logits.copy()
    apply_rule(row, ("allow", np.array([1, 3])))
    assert np.isneginf(row[[0, 2]]).all() and row[3] == 2.0
    row = logits.copy()
    apply_rule(row, ("ban", np.array([0, 2])))
    assert int(row.argmax()) == 3


def test_a_token_that_opens_and_starts_or_closes_a_place_at_once_is_checked(index: VocabIndex) -> None:
    c = IdConstraint(index, ("load_sales", "sales_daily"))
    assert c.violates("with DAG(dag_id=", '"my') and not c.violates("with DAG(dag_id=", '"load')
    assert c.violates('t = X(task_id="load_sales"); u = Y(task_id=', '"x"')
    assert not c.violates('t = X(task_id="load_sales"); u = Y(task_id=', '"sales_daily"')
    assert not c.violates("x = ", '"my"')  # not an id place
    text = VOCAB.__getitem__
    # the model prefers '"my' (index 25) right after dag_id=: the best token toward an id is taken instead
    logits = np.zeros(len(VOCAB))
    logits[VOCAB.index('"my')] = 9.0
    logits[VOCAB.index('"load')] = 2.0
    logits[VOCAB.index('"')] = 1.0
    assert text(c.pick("with DAG(dag_id=", logits, text)) == '"load'
    # nothing to constrain: the plain argmax
    assert text(c.pick("x = ", logits, text)) == '"my'


def test_the_engine_never_writes_an_id_the_request_did_not_name(tmp_path) -> None:
    """The bigram teacher always writes dag_id="tiny_teacher", task_id="extract"/"load", in 24-byte tokens that
    open and fill an id string at once. Asked to copy exactly those ids, its answer is unchanged; asked for
    others, no id place in its answer holds a name outside them (the invented one is never emitted)."""
    import re

    from airflow_net.serve.engine import Engine, SamplingParams
    from tests.support import tiny_gguf

    if not tiny_gguf.available():
        pytest.fail("llama.cpp's gguf-py is missing: run `make install`")
    path = tiny_gguf.build(tmp_path / "teacher.gguf")
    wanted = ("sales_daily", "pull_sales", "push_sales")
    with Engine(path, n_parallel=3, n_ctx=1024, n_threads=1) as engine:
        prompt = engine.render_chat([{"role": "user", "content": "x"}])
        free, same, other = engine.generate_many([prompt] * 3, [
            SamplingParams(max_tokens=300),
            SamplingParams(max_tokens=300, copy_ids=("tiny_teacher", "extract", "load")),
            SamplingParams(max_tokens=300, copy_ids=wanted),
        ])
    assert 'dag_id="tiny_teacher"' in free.text and 'task_id="extract"' in free.text
    assert same.text == free.text
    assert "tiny_teacher" not in other.text
    assert set(re.findall(r'(?:dag_id|task_id)\s*=\s*"([^"]*)"', other.text)) <= set(wanted)


def test_an_id_already_written_is_not_offered_again_until_all_are_used(index: VocabIndex) -> None:
    c = IdConstraint(index, ("load_sales", "sales_daily"))
    first = 'a = X(task_id="load_sales")\nb = X(task_id="'
    kind, allowed = c.allowed(first)
    assert set(allowed.tolist()) == tok("s", "sales")  # only the unused id's start
    assert c.violates(first[:-1], '"load') and not c.violates(first[:-1], '"')
    both = 'a = X(task_id="load_sales")\nb = X(task_id="sales_daily")\nc = X(task_id="'
    # every id used: the place is free (one more task of the model's own is valid; a used id again is DC301)
    assert c.allowed(both) is None and not c.violates(both[:-1], '"my_own"')


def test_each_place_takes_the_ids_of_its_role(index: VocabIndex) -> None:
    c = IdConstraint(index, ("dag:sales_daily", "task:load_sales"))
    assert set(c.allowed('with DAG(dag_id="')[1].tolist()) == tok("s", "sales")
    assert set(c.allowed('X(task_id="')[1].tolist()) == tok("l", "load", "load_")
    assert c.violates("X(task_id=", '"sales_daily"') and not c.violates("DAG(dag_id=", '"sales_daily"')
    # a role the request named nothing for is left to the model
    only_dag = IdConstraint(index, ("dag:sales_daily",))
    assert only_dag.allowed('X(task_id="') is None and not only_dag.violates("X(task_id=", '"extract"')
    assert only_dag.allowed('TaskGroup("') is None and not only_dag.violates("TaskGroup(", '"my"')


def test_a_request_with_a_python_task_gets_a_function_defined_before_the_dag() -> None:
    """The tiny model answered TaskFlow requests with `PythonOperator(python_callable=x_fn)` and no function at
    all (39 of the 300 generate answers): at the first top-level block after the imports, a `def` comes first."""
    assert "need:def" in request_id_roles("dag a_b | schedule none | fetch_x[@task] >> load_x[Bash]")
    assert "need:def" in request_id_roles("hi, dag a_b pls: fetch_x (a python callable) then load_x")
    assert "need:def" in request_id_roles("dag a_b, fetch_x as a taskflow function -> load_x")
    assert "need:def" not in request_id_roles("dag a_b | schedule none | fetch_x[@task.bash] >> load_x[Bash]")
    assert "need:def" not in request_id_roles("a dag called a_b that runs python scripts")  # no task named
    vocab = ["def", "def ", "d", "e", "f", " ", "with", "w", "@", "@task", "x", "\n", "_a", "(", ")"]
    index = VocabIndex(vocab)
    ids = (*request_id_roles("dag a_b | schedule none | fetch_x[@task] >> load_x[Bash]"),)
    c = IdConstraint(index, ids)
    head = FENCED + "import pendulum\nfrom airflow.sdk import DAG\n\ndefault_args = {}\n\n\n"
    kind, allowed = c.allowed(head)
    assert kind == "allow" and {vocab[t] for t in allowed} == {"def", "def ", "d"}  # toward "def ", not `with`
    assert {vocab[t] for t in c.allowed(head + "d")[1]} == {"e"}
    assert c.allowed(head + "def ") is None  # the name is the model's
    # one blank line (between imports and default_args), a function already defined, the DAG opened: free
    assert c.allowed(FENCED + "import pendulum\n\n") is None
    assert c.allowed(head + "def _a():\n    pass\n\n\n") is None
    opened = c.allowed(head.replace("default_args = {}", "with DAG('a_b') as dag:\n    x = 1"))
    assert opened is not None and {vocab[t] for t in opened[1]} == {" "}  # the next task's line, no `def`
    # a request without a Python task is left alone
    plain = IdConstraint(index, request_id_roles("dag a_b | schedule none | fetch_x[Bash] >> load_x[Bash]"))
    assert plain.allowed(head) is None


def test_an_xcom_pull_names_one_of_the_requested_tasks_used_or_not(index: VocabIndex) -> None:
    """`xcom_pull(task_ids="...")` reads a task of the file: one the request names (DC303 was the tiny model's
    third error: pulls from a task it made up), whether written already or still to come, and a pull does not
    count as writing the task."""
    c = IdConstraint(index, ("dag:sales_daily", "task:load_sales", "task:sales_report"))
    pulled = 'def f(ti):\n    rows = ti.xcom_pull(task_ids="load_sales")\n'
    assert c.violates("    rows = ti.xcom_pull(task_ids=", '"my') and not c.violates("ti.xcom_pull(task_ids=", '"load')
    assert set(c.allowed('ti.xcom_pull(task_ids="')[1].tolist()) == tok("l", "load", "load_", "s", "sales")
    # a task written already can still be pulled from; the pull leaves both ids for the tasks' own places
    written = 'a = X(task_id="load_sales")\ndef f(ti):\n    ti.xcom_pull(task_ids="'
    assert set(c.allowed(written)[1].tolist()) == tok("l", "load", "load_", "s", "sales")
    assert set(c.allowed(pulled + 'a = X(task_id="')[1].tolist()) == tok("l", "load", "load_", "s", "sales")
    # a request that names no task leaves the pull to the model
    assert IdConstraint(index, ("dag:sales_daily",)).allowed('ti.xcom_pull(task_ids="') is None


def test_a_request_that_names_tasks_but_no_group_gets_no_group(index: VocabIndex) -> None:
    c = IdConstraint(index, ("dag:sales_daily", "task:load_sales"))
    assert c.violates("    a = X()\n   ", " with") and c.violates("x\n\t", "with")  # an indented `with`
    assert not c.violates("x = 1\n", "with") and not c.violates("\n", "with DAG(")  # the DAG's own
    assert c.violates("    g = TaskGroup", "(") and c.violates("    g = Task", "Group(")
    assert c.violates("@task", "_group") and c.violates("", "@task_group(")
    # naming the class elsewhere is harmless: the import line, a task written next
    assert not c.violates("from airflow.sdk import DAG,", " TaskGroup")
    assert not c.violates("from airflow.sdk import DAG, TaskGroup", "\n")
    assert not c.violates("    with", " DAG") and not c.violates("@task", "\n")
    grouped = IdConstraint(index, ("dag:sales_daily", "group:extract", "task:load_sales"))
    assert not grouped.violates("\n   ", " with") and not grouped.violates("@task", "_group(")
    assert not IdConstraint(index, ("dag:sales_daily",)).violates("\n   ", " with")


def test_a_canonical_request_says_what_each_id_names() -> None:
    text = ("dag vacuum_mart_tables | schedule @weekly | vacuum.vacuum_inventory[SQLExecuteQuery] >> "
            "done[Empty] ; vacuum.vacuum_leads[SQLExecuteQuery] >> done")
    assert request_id_roles(text) == ("dag:vacuum_mart_tables", "group:vacuum", "task:vacuum_inventory",
                                      "task:done", "task:vacuum_leads", "member:vacuum.vacuum_inventory",
                                      "member:vacuum.vacuum_leads")
    # not the grammar (a person's text that starts like it): the prose rules
    assert request_id_roles("dag orders_sync, daily: `pull_orders`") == ("dag:orders_sync", "task:pull_orders")


# ---- brackets, names and ends -------------------------------------------------------------------------------

FENCED = "```python\n"


def test_the_code_block_is_not_closed_or_ended_empty_nor_begun_indented(index: VocabIndex) -> None:
    """A request written by hand ("hey, can you make me a dag called refund_sync, ... as a taskflow function ...")
    made the tiny model answer "```python\n```": an empty file, which best-of-n then picked (one error, fewer
    than a real attempt's); kept from it, the model began with " import", an IndentationError."""
    c = IdConstraint(index, ("dag:refund_sync", "task:pull_refunds"))
    assert c.violates(FENCED, "```") and c.violates(FENCED, "\n```") and c.violates(FENCED, " import")
    ended = IdConstraint(index, ("dag:refund_sync",), ends=[0])
    assert ended.rejects(FENCED, 0, "") and ended.rejects(FENCED + "\n", 0, "")
    assert not ended.rejects(FENCED + "x = 1\n", 0, "")  # something written: it may end
    # a blank line, then code, is fine; so are the fence and indentation once code is there
    assert not c.violates(FENCED, "\n") and not c.violates(FENCED, "import x")
    assert not c.violates(FENCED + "x = 1\n", "```") and not c.violates(FENCED + "if x:\n", "    y = 1")
    assert not c.violates("Here:", " ")  # before the code block: prose


def test_the_bracket_guard_stops_a_wrong_or_unopened_closer_and_an_early_fence() -> None:
    open_call = FENCED + "x = f(a, [1, 2"
    assert BracketGuard().violates(open_call, ")")  # `[` is open: `)` closes the wrong one
    assert not BracketGuard().violates(open_call, "])")
    assert BracketGuard().violates(FENCED + "x = 1\n", ")")  # nothing open
    assert BracketGuard().violates(open_call, "\n```")  # the code block may not close with `(` and `[` open
    assert not BracketGuard().violates(open_call + "])", "\n```")
    assert BracketGuard().violates(open_call, "\n``x")  # no backtick in Python code but the fence
    # inside strings and comments brackets mean nothing
    text = FENCED + 's = "a ( [ b"  # ) ]\nt = """x)\n"""\nu = f"{x}"\n'
    assert BracketGuard().violates(text, ")") and not BracketGuard().violates(text, "```")
    assert not BracketGuard().violates("Here is the DAG (", ")")  # before the fence: prose


@pytest.mark.parametrize("seed", range(3))
def test_the_bracket_guard_reads_an_answer_token_by_token_as_it_reads_it_whole(seed: int) -> None:
    import random

    answer = (FENCED + 'def f():\n    """Doc (with a bracket."""\n    return "psql \\"$URI\\" -c \\"\\\\copy x\\""\n'
              "t = X(task_id='a', cmd=\"echo '{{ ds }}'\")  # )\nz = [f(), {'k': (1, 2)}]\n```\n")
    rnd, g, i = random.Random(seed), BracketGuard(), 0
    while i < len(answer):  # pieces of 1-4 characters: a triple quote, an escape or the fence split anywhere
        j = min(len(answer), i + rnd.randint(1, 4))
        g.state(answer[:j])
        assert g.state(answer[:j]) == BracketGuard().state(answer[:j]), answer[:j]
        i = j
    assert BracketGuard().state(answer)[0] == "post"


def test_an_answer_may_end_only_with_nothing_open() -> None:
    g = BracketGuard()
    assert not g.can_end(FENCED + "x = f(") and not g.can_end(FENCED + 'x = """doc')
    assert g.can_end(FENCED + "x = f()\n") and g.can_end(FENCED + "x = 1\n```")


def test_names_in_must_exist_places_are_ones_the_file_defined() -> None:
    g = NameGuard()
    head = FENCED + "from airflow.sdk import DAG, chain\n\n\ndef _fetch():\n    pass\n\n\nwith DAG('x') as dag:\n"
    op = head + "    a = PythonOperator(task_id='a', python_callable="
    assert not g.violates(op, "_fe") and not g.violates(op + "_fet", "ch,")
    assert g.violates(op, "_re") and g.violates(op + "_fetch", "er,")
    assert g.violates(op + "_", " fetch")  # the name ends as `_`, which nothing defines
    deps = head + "    extract = X()\n    load = Y()\n    extract >>"
    assert not g.violates(deps, " load") and not g.violates(deps + " load", "\n")
    assert g.violates(deps, " transform") and g.violates(deps, " load >> zz")
    chained = head + "    extract = X()\n    load = Y()\n    chain(extract, "
    assert not g.violates(chained, "[load]") and g.violates(chained, "load, foo")
    # a new name elsewhere is free: an assignment, a keyword, a call's argument
    assert not g.violates(deps + " load\n", "    transform = Z(")
    assert not g.violates(head, "    t = X(task_id='t', retries=")
    # nothing defined for a place: left to the model
    assert not NameGuard().violates(FENCED + "x = PythonOperator(python_callable=", "_anything")


def test_a_value_the_dag_body_assigns_calls_a_function_the_file_defined() -> None:
    g = NameGuard()
    head = FENCED + "import pendulum\nfrom airflow.sdk import dag, task\n\n\n@dag(schedule=None)\ndef d():\n"
    body = head + "    @task\n    def extract():\n        return 1\n\n    raw = "
    assert not g.violates(body, "extract()") and not g.violates(body, "ext")
    assert g.violates(body, "summarize_health(") and g.violates(body + "extract", "ed()")  # never written
    assert not g.violates(body, "len(") and not g.violates(body, "pendulum.now()")  # builtins, imports
    assert not g.violates(body, "BashOperator(")  # an operator: autofix adds a forgotten import
    assert g.violates(body, "raw()") and not g.violates(body + "raw()\n    later = ", "raw")  # not yet, then defined
    # not the DAG's body: a helper's local value before the DAG, a deeper line, an argument
    helper = FENCED + "def _f(rows):\n    out = "
    assert not g.violates(helper, "rows")
    assert not g.violates(body + "extract()\n    @task\n    def t(x):\n        y = ", "x + 1")
    assert not g.violates(body + "extract(", "limit=anything")


def test_the_constraint_rejects_an_end_or_a_control_token_inside_open_code(index: VocabIndex) -> None:
    c = IdConstraint(index, ("dag:sales_daily",), ends=(999,))
    assert c.rejects(FENCED + "x = f(", 999, "") and not c.rejects(FENCED + "x = f()\n```", 999, "")
    assert c.rejects(FENCED + "x = 1\n", 5, "")  # a control token with no text (<|im_start|>)


def test_pick_goes_past_the_best_scored_when_only_a_low_scored_token_is_right() -> None:
    from airflow_net.serve.copy_ids import CANDIDATES

    vocab = ["```", *(f"`{i}" for i in range(CANDIDATES + 16)), ")", "x"]  # every backtick piece breaks a rule
    c = IdConstraint(VocabIndex(vocab), ("dag:sales_daily",))
    logits = np.linspace(10.0, 0.0, len(vocab))  # ")" scores below all of them
    assert c.pick(FENCED + "x = f(\n", logits, lambda t: vocab[t]) == len(vocab) - 2


def test_owners_tags_callables_connections_and_other_dags_are_no_task_ids() -> None:
    text = ("Write a DAG file for Airflow 3 defining the DAG `lead_scoring`. Default args: owner `ml_ops`, 3 "
            "retries. Tag it `ml_models`, `training_runs`. Tasks: `wait_for_load` is an ExternalTaskSensor on the "
            "`warehouse_daily_load` DAG; `score_leads`: a PythonOperator calling `_score_leads`; `check_rows`: a "
            "SQLCheckOperator on the `analytics_db` connection. Put `check_rows` in a task group with group_id "
            "`quality`.")
    assert request_id_roles(text) == ("dag:lead_scoring", "task:wait_for_load", "task:score_leads",
                                      "task:check_rows", "group:quality", "member:quality.check_rows",
                                      "need:def")  # a PythonOperator: its file defines a function
    # a task named inside its group (`group.task`) stays a task, bare too
    assert request_id_roles("DAG `a_b`: in TaskGroup `extract`: `extract.fetch_x`.") == (
        "dag:a_b", "group:extract", "task:extract.fetch_x", "task:fetch_x", "member:extract.fetch_x")
    # an id named once as a task and once elsewhere stays a task
    assert "task:load_x" in request_id_roles("DAG `a_b`: `load_x`, then `report_y` calling `load_x`.")


# ---- task groups --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sentence", [
    "Put `load_a` and `load_b` in a TaskGroup called `load`.",
    "Group `load_a` and `load_b` under a task group `load`.",
    "`load_a` and `load_b` belong in the `load` task group.",
    "Wrap `load_a` and `load_b` in a TaskGroup with group_id `load`.",
    "Groups: `load_a`, `load_b` in TaskGroup `load`; `check_c` in TaskGroup `checks`.",
])
def test_a_request_says_which_tasks_go_in_which_group(sentence: str) -> None:
    text = f"DAG `d_x` daily: `start_x` -> `load_a` -> `load_b` -> `check_c`. {sentence}"
    roles = request_id_roles(text)
    assert "group:load" in roles and "member:load.load_a" in roles and "member:load.load_b" in roles
    assert "member:load.start_x" not in roles and "member:load.check_c" not in roles
    # the noiser's ways: a dotted id, or the group in parentheses after the task; two groups in one clause say
    # nothing about which task is where
    assert request_group_members("then load.load_a and load_b (in group load)", ["load"], ["load_a", "load_b"]) \
        == {"load_a": "load", "load_b": "load"}
    assert request_group_members("use taskgroups: `load`, `checks` for `load_a` and `check_c`",
                                 ["load", "checks"], ["load_a", "check_c"]) == {}


GROUPED = ("dag:d_x", "group:load", "task:start_x", "task:load_a", "task:load_b", "task:end_x",
           "member:load.load_a", "member:load.load_b")
BODY = FENCED + "from airflow.sdk import DAG, TaskGroup\n\nwith DAG(dag_id=\"d_x\") as dag:\n"


def _text(index: VocabIndex, rule) -> set[str]:
    return {index.text(int(t)) for t in rule[1]}


def test_the_next_requested_task_in_a_group_opens_its_group_first() -> None:
    target = '    with TaskGroup("load") as load:\n'
    index = VocabIndex(["    ", "    with", " TaskGroup", '("load")', " as", " load", ":\n", "    x", "\n", "start"])
    c = IdConstraint(index, GROUPED)
    # start_x is next and in no group: its assignment is forced, not a group
    assert c._forced_line(BODY) == "    start_x = "
    after_start = BODY + '    start_x = EmptyOperator(task_id="start_x")\n'
    kind, allowed = c.allowed(after_start)  # load_a is next: the group's opening line, token by token
    assert kind == "allow" and _text(index, (kind, allowed)) == {"    ", "    with"}
    written = after_start
    for piece in ("    with", " TaskGroup", '("load")', " as", " load"):
        assert piece in _text(index, c.allowed(written))
        written += piece
    assert _text(index, c.allowed(written)) == {":\n"} and written + ":\n" == after_start + target
    # inside the block the task places take the group's members, outside the others
    inside = after_start + target + '        a = X(task_id="'
    assert c._unused(inside, "task") == ("load_a", "load_b")
    outside = after_start + target + '        a = X(task_id="load_a")\n        b = X(task_id="load_b")\n    e = X(task_id="'
    assert c._unused(outside, "task") == ("end_x",)
    # once the members are written in it, the next statement leaves the block; a bracket's next line may not
    done = after_start + target + '        a = X(task_id="load_a")\n        b = X(task_id="load_b")\n'
    assert c.violates(done, "        c") and not c.violates(done, "    e = X(")
    still_open = after_start + target + '        a = X(task_id="load_a")\n        b = X(\n            task_id="load_b",\n'
    assert not c.violates(still_open, "            retries=1")
    half = after_start + target + '        a = X(task_id="load_a")\n'
    assert not c.violates(half, "        b")  # load_b is still to come


def test_each_requested_task_is_assigned_in_the_requests_order_before_anything_else() -> None:
    c = IdConstraint(VocabIndex(["    ", "    start", "_x", " =", "x"]), GROUPED)
    # the DAG's body starts with the first requested task's assignment, token by token
    assert {c.index.text(int(t)) for t in c.allowed(BODY)[1]} == {"    ", "    start"}
    kind, toks = c.allowed(BODY + "    start")
    assert kind == "allow" and {c.index.text(int(t)) for t in toks} == {"_x"}
    assert c.allowed(BODY + "    start_x = ") is None  # then the model writes the operator
    # after the group, the next ungrouped task: written tasks (by a task_id place) are skipped, in any order
    grouped = (BODY + '    start_x = X(task_id="start_x")\n    with TaskGroup("load") as load:\n'
               + '        load_a = X(task_id="load_a")\n')
    assert c._forced_line(grouped) == "        load_b = "  # in the group's block, its next member
    left = grouped + '        load_b = X(\n            task_id="load_b",\n        )\n'
    assert c._forced_line(left) == "    end_x = "
    # nothing once every requested task is written, inside a def's body, inside a bracket, or in a TaskFlow file
    done = left + '    end_x = X(task_id="end_x")\n'
    assert c._forced_line(done) is None
    assert c._forced_line(BODY + "    def f():\n") is None
    assert c._forced_line(BODY + "    a = X(\n") is None
    assert c._forced_line(BODY.replace("with DAG", "@task\ndef t():\n    pass\n\nwith DAG")) is None
    # a request that names no task roles forces nothing; an id that cannot be a Python name is not assigned
    assert IdConstraint(VocabIndex(["x"]), ("dag:d_x",))._forced_line(BODY) is None
    assert IdConstraint(VocabIndex(["x"]), ("dag:d_x", "task:load-a", "task:class"))._forced_line(BODY) is None


def test_a_statement_is_not_deeper_than_the_one_before_unless_that_opened_a_block() -> None:
    c = IdConstraint(VocabIndex(["x"]), GROUPED)
    left = BODY + '    with TaskGroup("load") as load:\n        a = X(\n            task_id="load_a",\n        )\n    e = X(\n        task_id="end_x",\n        )\n'
    assert c.violates(left, "        a >> e") and not c.violates(left, "    a >> e")  # "unexpected indent"
    assert not c.violates(BODY + "    @task\n    def f():\n", "        return 1")  # after `:`, deeper
    # requests without groups are left as they were
    assert not IdConstraint(VocabIndex(["x"]), ("dag:d_x", "task:a_x")).violates(left, "        a >> e")


def test_a_person_writes_grouped_tasks_bare_and_names_a_group_in_plain_words() -> None:
    text = ("hi, need a dag called trips_replication, first start_run, then extract.export_trips (a bashoperator), "
            "then load_trips (in group extract), see docs.example.com/api_v2 and e.g. the mart.orders table")
    roles = request_id_roles(text)
    assert roles[0] == "dag:trips_replication" and "group:extract" in roles
    assert {"task:start_run", "task:export_trips", "task:load_trips"} <= set(roles)
    assert {"member:extract.export_trips", "member:extract.load_trips"} <= set(roles)
    assert not any("mart" in r or "example" in r or "api_v2" in r for r in roles)  # prose, a table, a host
    # a group named only in plain words, for a task the request names
    assert request_id_roles("dag called a_b: x_y (in group load). after that z_w") == (
        "dag:a_b", "task:x_y", "task:z_w", "group:load", "member:load.x_y")
    # a task_id place holds the bare id: the group adds its prefix
    c = IdConstraint(VocabIndex(["x"]), roles)
    assert "extract.export_trips" not in c.roles["task"] and c.tasks[:2] == ("start_run", "export_trips")


def test_the_dags_body_assigns_a_name_once() -> None:
    c = IdConstraint(VocabIndex(["x"]), ("dag:d_x", "task:a_x", "task:b_x"))
    body = FENCED + 'with DAG(\n    dag_id="d_x",\n) as dag:\n    a_x = X(\n        task_id="a_x",\n    )\n'
    assert c.violates(body, "    a_x =") and c.violates(body + "    a_x", " =")  # the last task again: DC301
    assert not c.violates(body, "    b_x =") and not c.violates(body, "    a_x >> b_x")
    assert not c.violates(body + "    b_x = X(\n", "        task_id=")  # an argument's line, not a statement
    assert not c.violates(body.replace("with DAG", "@task\ndef f():\n    pass\n\n\nwith DAG"), "    a_x =")
    # a variable assigned without a task_id place holding its id is not forced again (it would loop)
    odd = body.replace('a_x = X(\n        task_id="a_x",\n    )', "a_x = f()")
    assert c._forced_line(odd) == "    b_x = "
    assert c._forced_line(odd + '    b_x = X(task_id="b_x")\n') is None
