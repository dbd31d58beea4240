import json

from airflow_net.data import card
from airflow_net.data.corpus import build_corpus
from airflow_net.params import CorpusParams, CorpusSourceParams
from tests.support import validator
from tests.support.dags import dag_source


def test_length_stats_known_values():
    s = card.length_stats([10, 1, 4, 7, 3, 9, 2, 8, 6, 5])
    assert s == {"count": 10, "min": 1, "p50": 5, "mean": 5.5, "p90": 9, "max": 10}
    assert card.length_stats([]) == {"count": 0}


def test_corpus_card_reports_sources_filters_lengths(tmp_path, monkeypatch):
    validator.install(monkeypatch)
    root = tmp_path / "dags"
    root.mkdir()
    for i in range(4):
        (root / f"d{i}.py").write_text(dag_source(i))
    (root / "dup.py").write_text(dag_source(0))
    (root / "x.py").write_text(dag_source(9).replace("as dag:", "as dag"))
    params = CorpusParams(sources=[CorpusSourceParams(kind="dir", path=str(root), license="MIT", name="team")])
    records, stats = build_corpus(params, seed=0)
    c = card.corpus_card(records, stats, params=params.model_dump())
    md, js = card.write_data_card(tmp_path / "out", c)
    back = json.loads(js.read_text())
    assert back["summary"] == {"dags": 4, "collected": 6}
    assert back["sources"][0]["name"] == "team" and back["sources"][0]["kept"] == 4
    removed = {f["name"]: f["removed"] for f in back["filters"]}
    assert removed["duplicate"] == 1 and removed["invalid"] == 1 and sum(removed.values()) == 2
    assert back["lengths"]["dag_chars"]["max"] == max(len(dag_source(i)) for i in range(4))
    assert back["licenses"] == {"MIT": 4} and back["airflow_versions"] == {"3": 4}
    text = md.read_text()
    assert "| team | dir |" in text and "| duplicate | 1 | exact duplicates" in text
    assert "No API cost" in text


def test_instruct_card_has_cost_and_attribution(tmp_path):
    recs = [{"uid": "u1", "origin": "dir:a", "license": "MIT"}, {"uid": "u2", "origin": "synthetic", "license": "Apache-2.0"}]
    pairs = [
        {"uid": "u1", "instruction": "Build a daily DAG", "variant": "terse", "provider": "anthropic", "source": "x" * 50},
        {"uid": "u1", "instruction": "Please build it", "variant": "detailed", "provider": "anthropic", "source": "x" * 50},
        {"uid": "u2", "instruction": "One two three four", "variant": "terse", "provider": "anthropic", "source": "y" * 10},
    ]
    metrics = {"requests": 2, "usd": 0.0123, "usd_per_1k_instructions": 4.1, "filters": {"invalid_answer": 1}}
    c = card.instruct_card(pairs, metrics, records=recs)
    assert c["summary"]["pairs"] == 3 and c["summary"]["dags"] == 2
    assert {s["name"]: s["pairs"] for s in c["sources"]} == {"anthropic on dir:a": 2, "anthropic on synthetic": 1}
    assert c["licenses"] == {"MIT": 2, "Apache-2.0": 1}
    assert c["cost"] == {"requests": 2, "usd": 0.0123, "usd_per_1k_instructions": 4.1}
    assert c["lengths"]["instruction_words"]["max"] == 4 and c["lengths"]["dag_chars"]["count"] == 2
    md, _ = card.write_data_card(tmp_path, c)
    assert "- **usd**: 0.0123" in md.read_text() and "invalid_answer" in md.read_text()


def test_corpus_card_counts_the_files_each_warning_touched(tmp_path):
    """With the real validator: a DAG on a deprecated path that Airflow 3 still loads is kept, and the card
    says how many kept files carried that warning (and that it marks deprecated API)."""
    root = tmp_path / "dags"
    root.mkdir()
    for i in range(3):
        src = dag_source(i)
        if i < 2:  # the Airflow-2 path of DAG, loaded in Airflow 3 through a compatibility shim
            src = src.replace("from airflow.sdk import DAG", "from airflow.models.dag import DAG")
        (root / f"d{i}.py").write_text(src)
    params = CorpusParams(sources=[CorpusSourceParams(kind="dir", path=str(root), license="MIT", name="team")],
                          near_dup_threshold=1.0)
    records, stats = build_corpus(params, seed=0)
    assert len(records) == 3  # warnings never drop a DAG
    c = card.corpus_card(records, stats, params=params.model_dump())
    [row] = [w for w in c["warnings"] if w["code"] == "DC105"]
    assert row["files"] == 2 and row["deprecated_api"] is True and row["name"] == "deprecated-import"
    assert "| DC105 | deprecated-import | 2 | True |" in card.render_markdown(c)
