"""DAG files that people wrote (third-party packages on PyPI): the manifest, the fetch that checks it, and
the static verdict's agreement with both real DagBags on these files and their single-defect mutants.

The fast tests build small distributions in tmp_path; the agreement test needs `make airflow-env` and PyPI
(the pinned distributions are downloaded once into .cache/dagcheck/people)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from airflow_net.dagcheck import agreement
from airflow_net.dagcheck.airflow_tier import AirflowEngine, env_available
from airflow_net.dagcheck.corpus import MUTATIONS, mutate
from airflow_net.dagcheck.people import (
    MANIFEST,
    fetch_people_dags,
    is_dag_file,
    licence_of,
    load_manifest,
    people_examples,
    read_archive,
    scan,
    support_modules,
    written_for,
)
from airflow_net.utils import UserError

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "dagcheck" / "people"

DAG2 = "from airflow import DAG\nfrom acme.ops import AcmeOperator\n\nwith DAG('d', schedule=None) as dag:\n" \
       "    AcmeOperator(task_id='t')\n"
DAG3 = "from airflow.sdk import dag, task\n\n@dag(schedule=None)\ndef d():\n    pass\n\nd()\n"
METADATA = "Metadata-Version: 2.1\nName: acme-provider\nVersion: 1.0\nLicense-Expression: MIT\n\n"


def make_wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for n, text in files.items():
            z.writestr(n, text)
    return path


def make_sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for n, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(n)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


WHEEL_FILES = {
    "acme/__init__.py": "", "acme/ops.py": "class AcmeOperator: ...\n",
    "acme/example_dags/__init__.py": "", "acme/example_dags/example_acme.py": DAG2,
    "acme/example_dags/helper.py": "X = 1\n",  # no DAG: not a DAG file
    "tests/dags/t3.py": DAG3, "tests/__init__.py": "",
    "airflow/__init__.py": "",  # a package that ships `airflow/`: never put beside a DAG file
    "acme_provider-1.0.dist-info/METADATA": METADATA,
}


def test_dag_files_version_licence_and_support_modules(tmp_path):
    whl = make_wheel(tmp_path / "acme_provider-1.0-py3-none-any.whl", WHEEL_FILES)
    entry = scan(whl)
    assert [f["path"] for f in entry["files"]] == ["acme/example_dags/example_acme.py", "tests/dags/t3.py"]
    assert [f["written_for"] for f in entry["files"]] == [2, 3]
    assert entry["licence"] == "MIT" and entry["dist_sha256"] == hashlib.sha256(whl.read_bytes()).hexdigest()
    assert not is_dag_file("acme/ops.py", DAG2)  # library code, not under a DAG folder
    assert not is_dag_file("acme/example_dags/x.py", "print('DAG(')\n")  # no Airflow import
    assert written_for("from airflow.providers.standard.operators.empty import EmptyOperator") == 3
    # an sdist: PKG-INFO's classifiers when no licence field, and its packages under <name>-<version>/src/
    sdist = {"acme-1.0/PKG-INFO": "Metadata-Version: 1.2\nName: acme\nClassifier: License :: OSI Approved :: "
                                  "Apache Software License\n\n",
             "acme-1.0/src/acme/__init__.py": "", "acme-1.0/src/acme/sub/__init__.py": "",
             "acme-1.0/src/acme/sub/m.py": "Y = 2\n", "acme-1.0/examples/dags/e.py": DAG2}
    tgz = make_sdist(tmp_path / "acme-1.0.tar.gz", sdist)
    assert scan(tgz)["licence"] == "Apache Software License"
    assert set(support_modules(read_archive(tgz))) == {"acme/__init__.py", "acme/sub/__init__.py", "acme/sub/m.py"}
    support = support_modules(read_archive(whl))
    assert "acme/ops.py" in support and not any(k.startswith(("airflow/", "tests/")) for k in support)
    assert licence_of({}) == "unknown"
    with pytest.raises(UserError, match="expected a wheel"):
        read_archive(tmp_path / "x.egg")


def test_fetch_verifies_every_sha256_against_the_manifest(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    whl = make_wheel(cache / "acme_provider-1.0-py3-none-any.whl", WHEEL_FILES)
    entry = {"package": "acme-provider", "version": "1.0", **scan(whl)}
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"packages": [entry]}))
    got = fetch_people_dags(cache, manifest)  # already in the cache: no download
    examples = people_examples(got)
    assert [e.name for e in examples] == ["people/acme-provider/example_acme.py", "people/acme-provider/t3.py"]
    assert examples[0].airflow == 2 and "acme/ops.py" in examples[0].support
    # mutants keep the package beside them
    assert all(m.support is examples[0].support for m in mutate(examples[0]))
    entry["files"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps({"packages": [entry]}))
    with pytest.raises(UserError, match="not the file the manifest pins"):
        fetch_people_dags(cache, manifest)
    entry["dist_sha256"] = "1" * 64
    manifest.write_text(json.dumps({"packages": [entry]}))
    with pytest.raises(UserError, match="sha256 differs"):
        fetch_people_dags(cache, manifest)
    manifest.write_text("[]")
    with pytest.raises(UserError, match="expected the people-DAG manifest"):
        load_manifest(manifest)


def test_shipped_manifest_is_pinned_and_not_apache():
    entries = load_manifest(MANIFEST)
    assert len(entries) >= 15 and sum(len(e["files"]) for e in entries) >= 40
    for e in entries:
        assert not e["package"].startswith("apache-airflow"), e["package"]
        assert e["dist"].endswith((".whl", ".tar.gz")) and len(e["dist_sha256"]) == 64 and e["licence"]
        assert all(len(f["sha256"]) == 64 and f["written_for"] in (2, 3) for f in e["files"])


def test_support_paths_must_stay_inside_the_package(tmp_path):
    (tmp_path / "3" / "bin").mkdir(parents=True)
    (tmp_path / "3" / "bin" / "python").touch()  # never started: the paths are refused before
    eng = AirflowEngine(3, env_root=tmp_path)
    for bad in ("../escape.py", "/etc/x.py", "acme/data.txt"):
        with pytest.raises(UserError, match="expected a relative path"):
            eng.check_source("x = 1\n", "d.py", {bad: b""})


# -- agreement with both real DagBags ---------------------------------------------------------------------------
PER_KIND = 4  # mutants per kind and written-for version in the sample (all unmodified files are judged)


@pytest.mark.airflow
@pytest.mark.slow
@pytest.mark.skipif(not (env_available(3) and env_available(2)), reason="needs `make airflow-env` (Airflow 3 and 2)")
def test_static_verdicts_agree_with_dagbag_on_peoples_dags():
    try:
        examples = people_examples(fetch_people_dags(CACHE))
    except UserError as exc:
        pytest.skip(f"cannot fetch the pinned packages from PyPI: {exc}")
    sample = list(examples)
    for major in (2, 3):
        mutants = [m for e in examples if e.airflow == major for m in mutate(e)]
        for kind in MUTATIONS:
            of_kind = [m for m in mutants if m.mutation == kind]
            stride = max(1, len(of_kind) // PER_KIND)
            sample += of_kind[::stride][:PER_KIND]
    rows, _ = agreement.run(sample, timeout_s=60, judge_as="both")
    m = agreement.metrics(rows)
    detail = "\n" + agreement.table(rows) + "\n" + "\n".join(
        f"{r.cell} {r.name}: static {r.static_codes} airflow {r.airflow_codes} {r.airflow_message[:150]}"
        for r in rows if not r.unchecked and (not r.agree or not r.detected))
    assert set(m["by_cell"]) == {"2->2", "2->3", "3->2", "3->3"}, detail
    for cell, c in m["by_cell"].items():
        assert c["agreement"] >= 0.99, f"{cell}: {detail}"
    assert m["false_alarms"] == 0 and m["misses"] == 0, detail
    assert m["mutants_with_expected_code"] == m["mutants"], detail
    # enough of the corpus is judged (not left out for a package missing from the environment), files that
    # real Airflow loads among them, and only the known reasons leave a file out
    assert m["examples"] >= 20 and m["loaded_examples"] >= 12 and m["mutants"] >= 40, detail
    assert set(m["unchecked_by_reason"]) <= {
        "package missing from the environment", "fails inside a package dagcheck does not check",
        "provider outside the index, missing from the environment", "task decorator of a package missing from "
        "the environment", "reads a connection at parse time (deployment state)"}, detail
    # the package beside the file is what lets real Airflow load it: without it, it would be left out
    census = next(e for e in examples if e.name.endswith("example_census.py"))
    with AirflowEngine(2, timeout_s=60) as eng:
        assert eng.check_source(census.source, "example_census.py", census.support).ok
        assert not eng.check_source(census.source, "example_census.py").ok
