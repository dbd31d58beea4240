"""The reformulator's library: data loading, tokenizer, tiny T5, span corruption, fine-tuning, scoring."""

from __future__ import annotations

import json
import random

import pytest

from airflow_net.data.canonical import format_canonical
from airflow_net.data.factory import generate
from airflow_net.data.spec import DagSpec
from airflow_net.params import RewriteDataParams, RewriteModelParams, RewriteTrainParams
from airflow_net.rewrite.data import build_splits
from airflow_net.rewrite.evaluate import score, structural_f1
from airflow_net.utils import UserError

RECS = [{"uid": f"u{i}", "spec": s.to_dict()} for i, (s, _) in enumerate(generate(60, seed=4, airflow3_share=0.7, max_tasks=4))]
SMALL = RewriteModelParams(vocab_size=400, d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1,
                           num_heads=2, pretrain_steps=3, pretrain_batch_size=4, num_threads=1)


@pytest.fixture(scope="module")
def splits():
    return build_splits(RewriteDataParams(noisy_per_dag=2, val_frac=0.2, test_frac=0.2, max_test=None), 0, RECS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, splits):
    from airflow_net.rewrite.model import build_tiny, save_model, train_tokenizer

    d = tmp_path_factory.mktemp("tiny")
    texts = [r["query"] for r in splits["train"]] + [r["rewrite"] for r in splits["train"]]
    tok = train_tokenizer(texts, SMALL.vocab_size, d, 0)
    model = build_tiny(SMALL, len(tok), 0)
    save_model(model, tok, d)
    return d, tok, model


def test_corpus_pairs_split_by_dag_with_canonical_targets(splits):
    uids = {s: {r["uid"] for r in splits[s]} for s in splits}
    assert not (uids["train"] & uids["test"]) and not (uids["train"] & uids["val"])
    by_uid = {r["uid"]: r["spec"] for r in RECS}
    for r in splits["test"]:
        assert r["rewrite"] == format_canonical(DagSpec.from_dict(by_uid[r["uid"]]))
    assert {r["style"] for r in splits["train"]} == {"noisy", "terse"}
    again = build_splits(RewriteDataParams(noisy_per_dag=2, val_frac=0.2, test_frac=0.2, max_test=None), 0, RECS)
    assert again == splits  # seeded


def test_jsonl_file_folder_and_dataset_sources(tmp_path):
    rows = [{"q": f"make dag d{i} pls", "r": f"dag d{i} | schedule @daily | a[Bash]"} for i in range(60)]
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    p = RewriteDataParams(source="jsonl", path=str(f), query_field="q", rewrite_field="r", max_test=None)
    out = build_splits(p, 1, None)
    assert sum(len(v) for v in out.values()) == 60 and all(set(r) == {"query", "rewrite"} for r in out["train"])
    d = tmp_path / "splits"
    d.mkdir()
    for name in ("training", "dev", "test"):
        (d / f"{name}.jsonl").write_text(f.read_text())
    assert len(build_splits(p.model_copy(update={"path": str(d)}), 1, None)["val"]) == 60
    with pytest.raises(UserError, match="expected fields 'query'"):
        build_splits(RewriteDataParams(source="jsonl", path=str(f)), 1, None)
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    hf = build_splits(p.model_copy(update={"source": "hf", "path": str(tmp_path / "ds")}), 1, None)
    assert hf == out


def test_tokenizer_round_trips_requests_and_keeps_snake_case_apart(tiny, splits):
    d, tok, _ = tiny
    assert (d / "spiece.model").exists()
    from transformers import AutoTokenizer, T5Tokenizer

    for t in (T5Tokenizer.from_pretrained(str(d)), AutoTokenizer.from_pretrained(str(d))):
        for r in splits["train"][:40]:  # characters never seen in training may not survive (see report)
            for s in (r["query"], r["rewrite"]):
                assert t.decode(t(s)["input_ids"], skip_special_tokens=True) == s
    assert "<extra_id_0>" in tok.get_vocab()


def test_tiny_t5_shape_init_and_tie_flag(tiny, tmp_path):
    from airflow_net.rewrite.model import assert_tie_flag

    d, _, model = tiny
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["feed_forward_proj"] == "gated-gelu" and cfg["tie_word_embeddings"] is False
    assert abs(float(model.lm_head.weight.std()) - SMALL.d_model**-0.5) < 0.05  # not HF's std 1.0
    cfg["tie_word_embeddings"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match="tie_word_embeddings=True but the LM head is separate"):
        assert_tie_flag(d)
    cfg["tie_word_embeddings"] = False
    (d / "config.json").write_text(json.dumps(cfg))


def test_span_corruption_keeps_every_token():
    from airflow_net.rewrite.model import span_corrupt

    ids = list(range(10, 60))
    src, tgt = span_corrupt(ids, random.Random(0), 0.15, sentinel0=1000)
    assert tgt[-1] == 1 and any(t >= 900 for t in src)
    rebuilt, spans, cur = [], {}, None
    for t in tgt[:-1]:
        if t >= 900:
            cur = t
            spans[cur] = []
        else:
            spans[cur].append(t)
    for t in src:
        rebuilt += spans[t] if t >= 900 else [t]
    assert rebuilt == ids


def test_pretrain_and_finetune_lower_the_loss_and_change_weights(tiny, splits, tmp_path):
    import torch

    from airflow_net.rewrite.model import pretrain
    from airflow_net.rewrite.train import finetune

    _, tok, model = tiny
    torch.set_num_threads(1)
    curve = pretrain(model, tok, [r["query"] for r in splits["train"]], SMALL, 0)
    assert curve and all(c["loss"] == c["loss"] for c in curve)
    before = model.lm_head.weight.detach().clone()
    tp = RewriteTrainParams(max_steps=6, batch_size=8, lr=3e-3, warmup_steps=1, eval_steps=3, max_eval_examples=4)
    model, fcurve = finetune(model, tok, splits["train"], splits["val"], tp, 0, tmp_path)
    assert [c["step"] for c in fcurve] == [0, 3, 6]
    assert fcurve[-1]["eval_loss"] < fcurve[0]["eval_loss"]
    assert not torch.equal(before, model.lm_head.weight)


def test_structural_f1_and_scores(splits):
    r = splits["test"][0]
    assert structural_f1(r["rewrite"], r["spec"]) == (1.0, True)
    assert structural_f1("not canonical", r["spec"]) == (0.0, False)
    wrong_id = r["rewrite"].replace(f"dag {r['spec']['dag_id']} ", "dag other_id ", 1)
    f1, ok = structural_f1(wrong_id, r["spec"])
    assert ok and 0 < f1 < 1
    m, per = score([r["rewrite"], "x"], [r, r], loss=0.5)
    assert m["exact_match"] == 0.5 and m["parse_rate"] == 0.5 and m["structural_f1"] == 0.5
