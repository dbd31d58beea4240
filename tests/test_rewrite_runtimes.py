from pathlib import Path

import pytest

from airflow_net.rewrite.runtimes import load
from tests.support.tiny_t5 import LINES, build_tiny_t5


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("t5") / "model")


def test_fp32_generates_and_times_each_query(t5_folder):
    rt = load("torch-fp32", str(t5_folder), threads=1)
    out = rt.generate(LINES[:3], max_new_tokens=8)
    assert len(out.texts) == 3 and len(out.ms) == 3 and len(out.tokens) == 3
    assert all(ms > 0 for ms in out.ms)
    # Deterministic greedy decoding: same input, same text.
    assert rt.generate(LINES[:1], max_new_tokens=8).texts == out.texts[:1]


def test_ignore_eos_forces_the_full_length(t5_folder):
    rt = load("torch-fp32", str(t5_folder), threads=1)
    assert rt.generate(LINES[:4], max_new_tokens=6, ignore_eos=True).tokens == [6, 6, 6, 6]
    assert all(n <= 6 for n in rt.generate(LINES[:4], max_new_tokens=6).tokens)


def test_int8_matches_fp32_on_most_inputs(t5_folder):
    queries = LINES[:8]
    ref = load("torch-fp32", str(t5_folder), threads=1).generate(queries, max_new_tokens=8).texts
    got = load("torch-int8", str(t5_folder), threads=1).generate(queries, max_new_tokens=8).texts
    # Tolerance: int8 may flip a near-tie argmax on random weights; at least 6 of 8 must match.
    assert sum(a == b for a, b in zip(ref, got, strict=True)) >= 6


def test_bad_folder_and_runtime_fail_with_one_line(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load("torch-fp32", str(tmp_path), threads=1)
    with pytest.raises(ValueError, match="unknown runtime"):
        load("nope", str(tmp_path), threads=1)


# --- exported runtimes: ONNX Runtime and CTranslate2 -------------------------------------------------------

EXPORTED = ("onnx-fp32", "onnx-int8", "ct2-fp32", "ct2-int8")


@pytest.fixture(scope="module")
def exported(t5_folder, tmp_path_factory) -> dict[str, Path]:
    from airflow_net.rewrite.runtimes import export

    root = tmp_path_factory.mktemp("exported")
    folders = {}
    for name in EXPORTED:
        facts = export(name, str(t5_folder), str(root / name))
        assert all(v > 0 for k, v in facts.items() if k.endswith("_bytes"))
        folders[name] = root / name
    return folders


@pytest.mark.parametrize("name", ["onnx-fp32", "ct2-fp32"])
def test_fp32_exports_match_pytorch_greedy(t5_folder, exported, name):
    queries = LINES[::7]
    ref = load("torch-fp32", str(t5_folder), threads=1).generate(queries, max_new_tokens=12)
    got = load(name, str(exported[name]), threads=1).generate(queries, max_new_tokens=12)
    assert got.texts == ref.texts and got.tokens == ref.tokens
    assert all(ms > 0 for ms in got.ms)


@pytest.mark.parametrize("name", ["onnx-int8", "ct2-int8"])
def test_int8_exports_match_pytorch_on_most_inputs(t5_folder, exported, name):
    queries = LINES[::7][:8]
    ref = load("torch-fp32", str(t5_folder), threads=1).generate(queries, max_new_tokens=8).texts
    got = load(name, str(exported[name]), threads=1).generate(queries, max_new_tokens=8).texts
    # Same tolerance as torch-int8: int8 may flip a near-tie argmax on random weights; 6 of 8 must match.
    assert sum(a == b for a, b in zip(ref, got, strict=True)) >= 6


@pytest.mark.parametrize("name", EXPORTED)
def test_exports_ignore_eos_forces_the_full_length(exported, name):
    rt = load(name, str(exported[name]), threads=1)
    assert rt.generate(LINES[:3], max_new_tokens=7, ignore_eos=True).tokens == [7, 7, 7]
    assert all(1 <= n <= 7 for n in rt.generate(LINES[:3], max_new_tokens=7).tokens)


def _first_token_model(folder: Path, token: str, extra_vocab: int = 0) -> Path:
    """A tiny T5 (vocab grown by ``extra_vocab`` ids) whose first greedy token is ``token``: "eos" or "extra"."""
    import torch
    from transformers import T5ForConditionalGeneration

    build_tiny_t5(folder)
    model = T5ForConditionalGeneration.from_pretrained(folder)
    if extra_vocab:
        model.resize_token_embeddings(model.config.vocab_size + extra_vocab)
    target = model.config.eos_token_id if token == "eos" else model.config.vocab_size - 1
    with torch.no_grad():
        # Silence every decoder block: the final state is the (normed) embedding of the input token.
        for block in model.decoder.block:
            block.layer[0].SelfAttention.o.weight.zero_()
            block.layer[1].EncDecAttention.o.weight.zero_()
            block.layer[2].DenseReluDense.wo.weight.zero_()
        model.decoder.final_layer_norm.weight.fill_(1.0)
        # The tiny model's head is tied to the embeddings: make the target's row the start token's, 1000 times
        # longer, so its logit dominates the first step (Cauchy-Schwarz against rows of similar norm).
        start = model.shared.weight[model.config.decoder_start_token_id].clone()
        model.shared.weight[target] = 1000.0 * start
        assert model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    model.save_pretrained(folder)
    return folder


def test_exports_stop_at_eos_like_pytorch(tmp_path):
    """A model that always answers EOS first: each runtime stops there (1 token) unless told to ignore EOS."""
    from airflow_net.rewrite.runtimes import export

    folder = _first_token_model(tmp_path / "eos", "eos")
    ref = load("torch-fp32", str(folder), threads=1).generate(LINES[:2], max_new_tokens=5)
    assert ref.tokens == [1, 1] and ref.texts == ["", ""]
    for name in ("onnx-fp32", "ct2-fp32"):
        export(name, str(folder), str(tmp_path / name))
        rt = load(name, str(tmp_path / name), threads=1)
        got = rt.generate(LINES[:2], max_new_tokens=5)
        assert (got.tokens, got.texts) == (ref.tokens, ref.texts), name
        assert rt.generate(LINES[:2], max_new_tokens=5, ignore_eos=True).tokens == [5, 5], name


def test_exports_emit_ids_beyond_the_tokenizer(tmp_path):
    """vocab_size > the tokenizer's (as flan-t5's 32128): an id the tokenizer lacks is generated, not a crash."""
    from airflow_net.rewrite.runtimes import export

    folder = _first_token_model(tmp_path / "extra", "extra", extra_vocab=8)
    ref = load("torch-fp32", str(folder), threads=1).generate(LINES[:2], max_new_tokens=4, ignore_eos=True)
    for name in ("onnx-fp32", "ct2-fp32"):
        export(name, str(folder), str(tmp_path / name))
        got = load(name, str(tmp_path / name), threads=1).generate(LINES[:2], max_new_tokens=4, ignore_eos=True)
        assert (got.tokens, got.texts) == (ref.tokens, ref.texts), name


def test_ct2_scores_match_pytorch_log_probs(t5_folder, exported):
    """The converter's T5 output scaling follows scale_decoder_outputs (transformers 5 forces tie_word_embeddings)."""
    import ctranslate2
    import torch
    from transformers import T5ForConditionalGeneration, T5Tokenizer

    tok = T5Tokenizer.from_pretrained(str(t5_folder))
    model = T5ForConditionalGeneration.from_pretrained(str(t5_folder)).eval()
    ids = tok(LINES[0], return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
    logp = [torch.log_softmax(s[0], -1)[t].item() for s, t in zip(out.scores, out.sequences[0, 1:], strict=True)]
    translator = ctranslate2.Translator(str(exported["ct2-fp32"]))
    res = translator.translate_batch([tok.convert_ids_to_tokens(ids[0])], beam_size=1, max_decoding_length=6,
                                     min_decoding_length=6, return_scores=True)[0]
    # CTranslate2's score is the mean token log-probability of the hypothesis.
    assert res.scores[0] == pytest.approx(sum(logp) / len(logp), abs=1e-4)


def test_onnx_decoder_bias_is_t5s_own_at_every_position(t5_folder, exported):
    """The ONNX loop's self-attention bias (read from decoder_bias.npy by distance) equals what transformers'
    decoder computes for the query at each position, past T5's max_distance and past the stored table."""
    import numpy as np
    import torch
    from transformers import T5ForConditionalGeneration

    from airflow_net.rewrite.runtimes.onnx_runtime import BIAS_POSITIONS

    model = T5ForConditionalGeneration.from_pretrained(str(t5_folder)).eval()
    attn = model.decoder.block[0].layer[0].SelfAttention
    rt = load("onnx-fp32", str(exported["onnx-fp32"]), threads=1)
    for keys in (1, 2, 9, attn.relative_attention_max_distance + 3, BIAS_POSITIONS + 40):
        with torch.no_grad():
            want = attn.compute_bias(1, keys, past_seen_tokens=keys - 1)[0].numpy()  # (H, 1, keys)
        got = rt._bias(keys)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_stale_exports_are_made_again(t5_folder, tmp_path):
    """An export kept from an older layout (meta.json's format_version) is not current, so `airflow-net
    rewrite-bench` makes it again instead of failing to load it."""
    import json

    from airflow_net.rewrite.export import export_all, is_current

    export_all(["onnx-fp32"], t5_folder, tmp_path)
    assert is_current("onnx-fp32", tmp_path)
    meta = tmp_path / "onnx-fp32" / "meta.json"
    old = json.loads(meta.read_text())
    old.pop("format_version")  # written before versions were recorded: version 1, ONNX is now 2
    meta.write_text(json.dumps(old))
    assert not is_current("onnx-fp32", tmp_path)
    assert not is_current("ct2-int8", tmp_path)  # never exported


def test_exported_loads_fail_with_one_line(t5_folder, exported, tmp_path):
    for name in EXPORTED:
        with pytest.raises(ValueError, match="expected an? .*export") as e:
            load(name, str(tmp_path), threads=1)
        assert "\n" not in str(e.value)
        # The Hugging Face folder is not an export.
        with pytest.raises(ValueError, match="export"):
            load(name, str(t5_folder), threads=1)
    for family in ("onnx", "ct2"):
        with pytest.raises(ValueError, match="quant 'int8'.*found .*quant None"):
            load(f"{family}-int8", str(exported[f"{family}-fp32"]), threads=1)


def test_ct2_int8_really_computes_in_int8(exported):
    # compute_type "default" on a float32 conversion silently computes in float32 (see ct2_runtime).
    assert load("ct2-int8", str(exported["ct2-int8"]), threads=1).translator.compute_type == "int8_float32"
    assert load("ct2-fp32", str(exported["ct2-fp32"]), threads=1).translator.compute_type == "float32"
