"""The static tiers agree with Airflow's own DagBag on real example DAGs and on mutants with one defect
each (the corpus is built from the apache-airflow wheels on PyPI, cached under .cache/dagcheck/), in every
(written for, judged as) cell: each file is judged as Airflow 2 and as Airflow 3, against both real DagBags.

The full table: `python tools/bench_dagcheck.py agreement`. This test runs a fixed sample of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_net.dagcheck import agreement
from airflow_net.dagcheck.airflow_tier import env_available
from airflow_net.dagcheck.corpus import MUTATIONS, example_dags, fetch_wheels, mutate
from airflow_net.utils import UserError

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.slow,
    pytest.mark.skipif(not (env_available(3) and env_available(2)), reason="needs `make airflow-env` (Airflow 3 and 2)"),
]
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "dagcheck" / "wheels"
PER_KIND = 3  # mutants per kind and Airflow version in the sample
EXAMPLES = 12  # unmodified examples per Airflow version


@pytest.fixture(scope="module")
def sample():
    try:
        examples = example_dags(fetch_wheels(CACHE))
    except UserError as exc:
        pytest.skip(f"cannot fetch the apache-airflow wheels: {exc}")
    out = []
    for major in (2, 3):
        mine = [e for e in examples if e.airflow == major]
        step = max(1, len(mine) // EXAMPLES)
        out += mine[::step][:EXAMPLES]
        mutants = [m for e in mine for m in mutate(e)]
        for kind in MUTATIONS:
            of_kind = [m for m in mutants if m.mutation == kind]
            stride = max(1, len(of_kind) // PER_KIND)
            out += of_kind[::stride][:PER_KIND]
    return out


def test_static_verdicts_agree_with_dagbag_in_every_cell(sample):
    rows, _ = agreement.run(sample, timeout_s=60, judge_as="both")
    m = agreement.metrics(rows)
    detail = "\n" + agreement.table(rows) + "\n" + "\n".join(
        f"{r.cell} {r.name}: static {r.static_codes} airflow {r.airflow_codes} {r.airflow_message[:150]}"
        for r in rows if not r.agree or not r.detected)
    assert set(m["by_cell"]) == {"2->2", "2->3", "3->2", "3->3"}, detail
    for cell, c in m["by_cell"].items():
        assert c["agreement"] >= 0.99, f"{cell}: {detail}"
        assert c["false_alarms_on_loaded_examples"] == 0, f"{cell}: {detail}"
    assert m["false_alarms"] == 0, detail
    assert m["mutants_with_expected_code"] == m["mutants"], detail
    # every mutation kind is in the sample, for both versions
    assert {r.mutation for r in rows if r.mutation} == set(MUTATIONS)
    # deprecated paths that still load are warnings that mark deprecated API, never errors
    # (the example itself may fail for another reason: then both verdicts say so)
    shimmed = [r for r in rows if r.mutation == "deprecated-import" and r.written_for == r.airflow]
    assert shimmed and all(r.agree and "DC105" in r.static_codes for r in shimmed), detail
    assert sum(r.static_ok and r.airflow_ok for r in shimmed) >= len(shimmed) // 2, detail
