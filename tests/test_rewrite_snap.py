"""Mending and id-copying after decoding (rewrite/snap.py): gold is a fixed point, slips are mended, ids snap
to the request's, and nothing that cannot be read with one meaning is changed."""

from __future__ import annotations

import random

import pytest

from airflow_net.data.canonical import format_canonical, parse_canonical
from airflow_net.data.describer import describe
from airflow_net.data.factory import generate
from airflow_net.data.noiser import noisy_request
from airflow_net.rewrite.snap import pick, repair, request_identifiers, snap

SPECS = [s for s, _ in generate(120, seed=11, airflow3_share=0.7, max_tasks=5)]
REQ = ("hi, need a dag called vacuum_mart_tables every monday at 00:45: start (no-op) -> vacuum_orders (sql) "
       "-> purge_tmp_files")


def test_gold_is_a_fixed_point_for_every_request_style():
    rng = random.Random(0)
    for s in SPECS:
        gold = format_canonical(s)
        assert snap(gold, noisy_request(s, rng)) == gold
        for variant in ("terse", "detailed", "business"):
            assert snap(gold, describe(s, variant, rng)) == gold


def test_invented_and_mangled_ids_snap_to_the_request():
    got = "dag vacuum_analytics_tables | schedule 45 0 * * 1 | start[Empty] >> vacuum_order[SQLExecuteQuery] >> purge_tmp_tmp_tmp_files[Bash]"
    assert snap(got, REQ) == ("dag vacuum_mart_tables | schedule 45 0 * * 1 | start[Empty] >> "
                              "vacuum_orders[SQLExecuteQuery] >> purge_tmp_files[Bash]")


def test_two_wrong_ids_never_snap_onto_the_same_one_and_operators_stay():
    got = "dag vacuum_mart_tables | schedule @daily | purge_tmp_file[Bash] >> purge_tmp_filez[Bash]"
    out = parse_canonical(snap(got, REQ))
    assert list(out.tasks) in (["purge_tmp_files", "purge_tmp_filez"], ["purge_tmp_file", "purge_tmp_files"])
    assert set(out.tasks.values()) == {"BashOperator"}
    # an operator that looks like an id of the request is never rewritten
    assert "[SQLExecuteQuery]" in snap("dag x | schedule @daily | vacuum_orders[SQLExecuteQuery]", REQ)


def test_unrelated_ids_stay_when_nothing_is_similar_enough():
    got = "dag vacuum_mart_tables | schedule @daily | start[Empty] >> send_slack_alert[@task]"
    assert snap(got, REQ) == got


@pytest.mark.parametrize("slip, mended", [
    ("dag d | schedule @daily | a[Bash] >>> b[Bash]", "dag d | schedule @daily | a[Bash] >> b[Bash]"),
    ("dag d | schedule @daily | a[Bash] >> c[Bash] ; b[Bash] >> c[Bash]",
     "dag d | schedule @daily | a[Bash] >> c[Bash] ; b[Bash] >> c"),
    ("dag d | schedule 15 8 * * * * | a[Bash]", "dag d | schedule 15 8 * * * | a[Bash]"),
])
def test_repair_mends_the_slips_with_one_reading(slip, mended):
    assert repair(slip) == mended and parse_canonical(mended)


def test_a_sixth_field_that_is_not_a_star_is_left_for_the_parser():
    assert repair("dag d | schedule 15 8 * * * 1 | a[Bash]") == "dag d | schedule 15 8 * * * 1 | a[Bash]"


def test_a_cron_literal_in_the_request_replaces_an_invalid_schedule():
    got = "dag orders_sync | schedule 99 8 * * * | a_b[Bash]"
    assert snap(got, "dag `orders_sync`, cron `15 8 * * *`: `a_b`").split(" | ")[1] == "schedule 15 8 * * *"


def test_unparsable_text_and_requests_without_ids_are_returned_unchanged():
    bad = "dag x | schedule | a[Bash"
    assert snap(bad, REQ) == bad
    got = "dag weird_name | schedule @daily | a[Bash]"
    assert snap(got, "make me something that runs daily") == got


def test_request_identifiers_reads_backticks_and_snake_case_first_mention_first():
    ids = request_identifiers("Need `orders` then load_orders and `refresh_view`, then load_orders again")
    assert ids == ["orders", "refresh_view", "load_orders"]


def test_pick_takes_the_first_candidate_that_parses_after_snapping():
    bad = "dag x | schedule | a[Bash"
    second = "dag vacuum_mart_tablez | schedule @daily | start[Empty]"
    third = "dag vacuum_mart_tables | schedule @weekly | start[Empty]"
    assert pick([bad, second, third], REQ) == "dag vacuum_mart_tables | schedule @daily | start[Empty]"
    assert pick([bad, second, third], REQ, mend=False) == second
    assert pick([bad, bad], REQ) == bad  # none parses: the best one, for the caller's fallback
    with pytest.raises(ValueError):
        pick([], REQ)


def test_reformulator_beams_return_a_parsing_candidate_when_one_exists(tmp_path, monkeypatch):
    from airflow_net.rewrite.reformulator import Reformulator
    from tests.support.tiny_t5 import LINES, build_tiny_t5

    folder = build_tiny_t5(tmp_path / "m")
    ref = Reformulator(folder, beams=3, max_new_tokens=6)
    assert ref.beams == 3 and isinstance(ref(LINES[0]), str) and ref.last_ms > 0
    texts, _, _ = ref.runtime.nbest(LINES[0], 3, 6)
    assert len(texts) == 3 and ref(LINES[0]) == pick(texts, LINES[0])
    good = "dag d | schedule @daily | a[Bash]"
    monkeypatch.setattr(ref.runtime, "nbest", lambda q, n, m: (["nonsense", good, "x"], 1.0, [3, 5, 1]))
    assert ref("make dag d") == good


def test_reformulator_loads_an_exported_runtime_or_says_what_to_run(tmp_path):
    from airflow_net.rewrite.export import export_all
    from airflow_net.rewrite.reformulator import Reformulator
    from airflow_net.utils import UserError
    from tests.support.tiny_t5 import LINES, build_tiny_t5

    folder = build_tiny_t5(tmp_path / "m")
    with pytest.raises(UserError, match="rewrite_export"):
        Reformulator(folder, runtime="ct2-int8", exported=tmp_path / "rt")
    with pytest.raises(UserError, match="unknown rewrite runtime"):
        Reformulator(folder, runtime="tf-int8", exported=tmp_path / "rt")
    export_all(["ct2-int8"], folder, tmp_path / "rt")
    ref = Reformulator(folder, runtime="ct2-int8", exported=tmp_path / "rt", beams=2, max_new_tokens=6)
    assert ref.beams == 2 and ref.name == "ct2-int8"
    texts, _, _ = ref.runtime.nbest(LINES[1], 2, 6)
    assert len(texts) == 2 and ref(LINES[1]) == pick(texts, LINES[1])


def test_the_dag_id_a_person_names_wins_over_an_invented_one():
    req = ("hi, need a dag called invoices_sync, every 20 min. fetch_invoices pulls them from the billing api, "
           "then store_invoices writes them to postgres")
    got = "dag pull_invoices_from_billing | schedule */20 * * * * | fetch_invoices[Bash] >> store_invoices[Python]"
    assert snap(got, req).startswith("dag invoices_sync | ")
    assert snap(got.replace("pull_invoices_from_billing", "invoices_sync"), req).startswith("dag invoices_sync | ")
    for phrase in ("Need a DAG called `orders_sync` daily", "make a dag, id orders_sync. daily", "dag named orders_sync"):
        assert snap("dag x_y | schedule @daily | a_b[Bash]", phrase).startswith("dag orders_sync | ")
