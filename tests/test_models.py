"""The base model and LoRA fine-tuning on a micro model (hidden 256, one layer, vocab ~512): seconds each."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_models_helpers import (
    make_corpus,
    make_sft_rows,
    micro_base_params,
    micro_lora_params,
    micro_train_params,
    write_sft,
)

from airflow_net.models.base import (
    build_tiny_model,
    encode_corpus,
    end_of_turn_token,
    load_corpus_sources,
    load_hf_base,
    make_tiny_base,
    pretrain,
    save_base,
    train_split_conversations,
)
from airflow_net.models.sft import (
    build_trainer,
    history_csv,
    load_sft_rows,
    resolve_unsloth,
    tokens_trained,
    train_lora,
)
from airflow_net.models.tokenizer import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    MARKER_KEY,
    chat_template,
    is_ours,
    save_tokenizer,
    train_tokenizer,
)
from airflow_net.utils import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def sources(corpus) -> list[str]:
    return load_corpus_sources(corpus)


@pytest.fixture(scope="module")
def tokenizer(sources):
    return train_tokenizer(sources, 512)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, sources) -> Path:
    """A micro base model, pre-trained a little, saved like the base stage saves it."""
    torch.set_num_threads(1)
    tiny = make_tiny_base(sources, micro_base_params(pretrain_steps=10), seed=0)
    out = tmp_path_factory.mktemp("base") / "base"
    save_base(tiny.model, tiny.tokenizer, out, ours=True)
    return out


# --- tokenizer -------------------------------------------------------------------------------------------


def test_tokenizer_round_trips_text_and_keeps_specials_whole(tokenizer) -> None:
    texts = [
        'with DAG(dag_id="x", schedule="0 6 * * *") as dag:\n\tt1 >> [t2, t3]\n\n\n',
        "café — naïve 日本語 🚀 'll 's ''' \"\"\" 1234567890",
        "   leading spaces\r\nand CRLF",
    ]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    for special in (ENDOFTEXT, IM_START, IM_END):
        ids = tokenizer.encode(special, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == special
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == ENDOFTEXT
    assert tokenizer.bos_token is None  # nothing is prepended: prompts are exactly what the template writes
    assert 300 < len(tokenizer) <= 512


def test_tokenizer_has_trl_qwen25_chat_template(tokenizer) -> None:
    from trl.chat_template_utils import get_training_chat_template, qwen2_5_chat_template

    assert tokenizer.chat_template == chat_template() == qwen2_5_chat_template
    # TRL knows this template, so assistant_only_loss gets the variant with {% generation %} markers
    assert "{% generation %}" in get_training_chat_template(tokenizer).replace("{%- generation %}", "{% generation %}")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith(f"{IM_START}user\nhi{IM_END}\n{IM_START}assistant\n")
    assert end_of_turn_token(tokenizer) == IM_END


def test_tokenizer_splits_text_exactly_like_qwen2(tokenizer) -> None:
    """The pre-tokenizer is what llama.cpp's `qwen2` reproduces: it must be Qwen2's, piece for piece."""
    from transformers import Qwen2Tokenizer

    qwen = Qwen2Tokenizer()  # transformers' own Qwen2 pipeline, empty vocabulary
    text = "def f(x):\n    return x**2  # it's 3.14 — don't\n\n\tTAB  end"
    ours = tokenizer.backend_tokenizer
    ref = qwen.backend_tokenizer
    assert ours.pre_tokenizer.pre_tokenize_str(text) == ref.pre_tokenizer.pre_tokenize_str(text)
    assert ours.normalizer.normalize_str("Ame\u0301lie") == ref.normalizer.normalize_str("Ame\u0301lie")


def test_saved_tokenizer_reloads_identically_with_its_marker(tokenizer, tmp_path) -> None:
    from transformers import AutoTokenizer

    save_tokenizer(tokenizer, tmp_path, ours=True)
    assert is_ours(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())[MARKER_KEY]["pre_tokenizer"] == "qwen2"
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "from airflow.sdk import dag\n"
    assert again.encode(text) == tokenizer.encode(text)
    assert again.chat_template == tokenizer.chat_template and again.eos_token == IM_END
    plain = tmp_path / "plain"
    save_tokenizer(tokenizer, plain, ours=False)
    assert not is_ours(plain)


def test_tokenizer_refuses_a_vocab_smaller_than_the_bytes(sources) -> None:
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(sources, 100)


# --- pre-training ----------------------------------------------------------------------------------------


def test_tiny_model_has_the_asked_dimensions(tokenizer) -> None:
    p = micro_base_params(num_layers=2)
    model = build_tiny_model(p, tokenizer, seed=0)
    c = model.config
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (256, 256, 2)
    assert (c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (4, 2, len(tokenizer))
    assert c.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert c.eos_token_id == tokenizer.convert_tokens_to_ids(IM_END)


def test_pretraining_loss_goes_down_and_is_seeded(tokenizer, sources) -> None:
    stream, lengths = encode_corpus(tokenizer, sources)
    assert len(lengths) == len(sources)
    assert int((stream == tokenizer.convert_tokens_to_ids(ENDOFTEXT)).sum()) == len(sources)
    p = micro_base_params()
    seen = []
    model = build_tiny_model(p, tokenizer, seed=0)
    r = pretrain(model, stream, steps=20, batch_size=4, seq_len=128, lr=3e-3, seed=0, on_step=lambda s, x: seen.append(s))
    assert seen == list(range(1, 21)) and len(r.losses) == 20
    assert r.final_loss < 0.6 * r.initial_loss, r.losses
    assert r.tokens == 20 * 4 * 128 and r.tokens_per_s > 0
    again = pretrain(build_tiny_model(p, tokenizer, seed=0), stream, steps=3, batch_size=4, seq_len=128, lr=3e-3, seed=0)
    assert again.losses == pytest.approx(r.losses[:3], rel=1e-5)  # same seed, same data order and init


def test_pretraining_shortens_windows_for_a_tiny_corpus(tokenizer) -> None:
    stream, _ = encode_corpus(tokenizer, ["x = 1\n"])
    r = pretrain(build_tiny_model(micro_base_params(), tokenizer, seed=0), stream, steps=2, batch_size=2,
                 seq_len=512, lr=1e-3, seed=0)
    assert r.seq_len == stream.numel() - 1 and len(r.losses) == 2


def test_request_rows_start_at_a_conversation_and_come_from_the_train_split_only(tokenizer, sources) -> None:
    from airflow_net.data.prepare import split_of
    from airflow_net.params import PrepareParams

    prep = PrepareParams(val_frac=0.3, test_frac=0.3)
    pairs = [{"uid": f"u{i}", "instruction": f"make dag_{i}", "source": src} for i, src in enumerate(sources)]
    convs = train_split_conversations(pairs, prep, seed=0)
    train = [p for p in pairs if split_of(p["uid"], prep, 0) == "train"]
    assert 0 < len(convs) == len(train) < len(pairs)
    assert [c[1]["content"] for c in convs] == [p["instruction"] for p in train]
    assert convs[0][-1]["role"] == "assistant" and convs[0][-1]["content"].startswith("```python\n")
    with pytest.raises(UserError, match="uid/instruction/source"):
        train_split_conversations([{"uid": "u", "instruction": "x"}], prep, seed=0)

    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in convs]
    conv_stream, lengths = encode_corpus(tokenizer, texts)
    starts = [sum(lengths[:i]) + i for i in range(len(lengths))]
    code_stream, _ = encode_corpus(tokenizer, sources)
    seen: list[torch.Tensor] = []

    class Recorder(torch.nn.Module):  # the loop's only contract: a module whose call returns .loss
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))
            self.config = type("C", (), {"use_cache": True})()

        def forward(self, input_ids, labels):
            seen.append(input_ids.clone())
            return type("O", (), {"loss": self.w * 1.0})()

    pretrain(Recorder(), code_stream, steps=4, batch_size=4, seq_len=32, lr=1e-3, seed=0,
             conversations=(conv_stream, starts), conversation_share=0.5)
    im_start = tokenizer.convert_tokens_to_ids(IM_START)
    for batch in seen:  # two rows of each batch open a conversation (its system turn), two are code windows
        assert batch.shape == (4, 32)
        assert (batch[:2, 0] == im_start).all()
        assert tokenizer.decode(batch[0, :8]).startswith("<|im_start|>system")


def test_corpus_without_sources_is_a_user_error(tmp_path) -> None:
    (tmp_path / "dags.jsonl").write_text(json.dumps({"source": "", "spec": {}}) + "\n")
    with pytest.raises(UserError, match="no DAG sources"):
        load_corpus_sources(tmp_path)


# --- a Hugging Face model from a local folder ------------------------------------------------------------


def test_hf_base_loads_from_a_local_folder(tmp_path, tokenizer) -> None:
    model = build_tiny_model(micro_base_params(), tokenizer, seed=0)
    # A checkpoint whose EOS is <|endoftext|> while its template ends turns with <|im_end|> (like base models)
    tokenizer = tokenizer.__class__.from_pretrained(_saved(tokenizer, tmp_path / "tok"))
    tokenizer.eos_token = ENDOFTEXT
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    lm, tok = load_hf_base(str(tmp_path / "hf"), dtype="float32")
    assert tok.chat_template and tok.eos_token == IM_END  # EOS follows the template's end of turn
    assert lm.generation_config.eos_token_id == tok.convert_tokens_to_ids(IM_END)
    torch.testing.assert_close(lm.model.embed_tokens.weight, model.model.embed_tokens.weight)
    save_base(lm, tok, tmp_path / "out", ours=False)
    assert (tmp_path / "out" / "config.json").is_file() and not is_ours(tmp_path / "out")


def test_hf_base_without_chat_template_is_refused(tmp_path, tokenizer) -> None:
    model = build_tiny_model(micro_base_params(), tokenizer, seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink()
    with pytest.raises(UserError, match="no chat template"):
        load_hf_base(str(tmp_path))
    with pytest.raises(UserError, match="could not load a tokenizer"):
        load_hf_base(str(tmp_path / "missing"))


def _saved(tokenizer, path: Path) -> Path:
    tokenizer.save_pretrained(path)
    return path


# --- SFT ---------------------------------------------------------------------------------------------------


def test_sft_rows_keep_only_messages(tmp_path) -> None:
    rows = load_sft_rows(write_sft(tmp_path, n_train=3, n_val=1) / "train.jsonl")
    assert len(rows) == 3 and all(set(r) == {"messages"} for r in rows)
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(UserError, match="last message must be the assistant"):
        load_sft_rows(tmp_path / "bad.jsonl")


def test_unsloth_choice() -> None:
    assert resolve_unsloth("never") is False
    if not torch.cuda.is_available():
        assert resolve_unsloth("auto") is False
        with pytest.raises(UserError, match="use_unsloth"):
            resolve_unsloth("always")


def test_history_csv_leaves_absent_values_empty() -> None:
    text = history_csv([{"step": 0, "train_loss": None, "eval_loss": 2.5}, {"step": 2, "train_loss": 2.0, "eval_loss": None}])
    rows = list(csv.DictReader(text.splitlines()))
    assert rows == [{"step": "0", "train_loss": "", "eval_loss": "2.500000"},
                    {"step": "2", "train_loss": "2.000000", "eval_loss": ""}]


def test_only_assistant_tokens_carry_loss(base_dir, tmp_path) -> None:
    rows = make_sft_rows(6)
    trainer, _ = build_trainer(base_dir, rows, [], train=micro_train_params(packing=True), lora=micro_lora_params(),
                               seed=0, output_dir=tmp_path)
    tok = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    spans, cur = [], []
    for i, lab in zip(ids, labels, strict=True):
        if lab != -100:
            assert lab == i
            cur.append(i)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    expected = {"\n" + r["messages"][-1]["content"] + IM_END + "\n" for r in rows}
    assert spans and set(spans) <= expected  # the answer and the end of turn: nothing of the prompt
    assert len(spans) == len(batch["cu_seq_lens_q"]) - 1  # one span per packed conversation


def test_weight0_assistant_turns_are_context_not_loss(base_dir, tmp_path) -> None:
    """A repair conversation trains on the fix only: the broken DAG (weight 0) carries no loss, and the saved
    tokenizer keeps the serving template."""
    plain = make_sft_rows(3)
    repair = []
    for r in make_sft_rows(3, seed=1):
        sys_, user, answer = r["messages"]
        repair.append({"messages": [sys_, user, {"role": "assistant", "content": "BROKEN " + answer["content"],
                                                 "weight": 0},
                                    {"role": "user", "content": "DC101 line 3: fix it"}, answer]})
    rows = plain + repair
    trainer, _ = build_trainer(base_dir, rows, [], train=micro_train_params(packing=False, batch_size=6),
                               lora=micro_lora_params(), seed=0, output_dir=tmp_path / "o")
    tok = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    trained = []
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        trained.append(tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100]))
    assert not any("BROKEN" in t for t in trained)
    finals = {"\n" + r["messages"][-1]["content"] + IM_END + "\n" for r in rows}
    assert set(trained) == finals  # exactly one trained span per conversation: its last answer
    assert "weight" not in tok.init_kwargs.get("airflow_net_chat_template", "") and "generation" in tok.chat_template
    bad = [{"messages": [*repair[0]["messages"][:-1], {**repair[0]["messages"][-1], "weight": 0}]}]
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad[0]) + "\n")
    with pytest.raises(UserError, match="trained on"):
        load_sft_rows(tmp_path / "bad.jsonl")


def test_sft_loss_goes_down_and_lora_weights_change(base_dir, tmp_path) -> None:
    rows = make_sft_rows(30)
    trainer, history = build_trainer(
        base_dir, rows[:24], rows[24:], train=micro_train_params(max_steps=10, eval_steps=5), lora=micro_lora_params(),
        seed=0, output_dir=tmp_path,
    )
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    assert lora and all(p.requires_grad == ("lora_" in n) for n, p in trainer.model.named_parameters())
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(not torch.equal(after[n], v) for n, v in lora.items()), "some LoRA tensors did not change"
    assert all(torch.equal(after[n], v) for n, v in frozen.items()), "a base weight changed"
    train = [v["train_loss"] for _, v in sorted(history.rows.items()) if "train_loss" in v]
    evals = [v["eval_loss"] for _, v in sorted(history.rows.items()) if "eval_loss" in v]
    assert len(train) == 5 and train[-1] < train[0], train
    assert len(evals) == 3 and evals[-1] < evals[0], evals  # at the start, step 5 and step 10
    assert history.num_tokens > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_trains_in_bf16_without_unsloth(base_dir, tmp_path) -> None:
    # before the Unsloth test: importing unsloth patches transformers and TRL for the rest of the process (the
    # train stage is one process and decides first); run after it, on an H200, this one saved no adapter weights
    rows = make_sft_rows(12)
    r = train_lora(base_dir, rows[:10], rows[10:], tmp_path / "adapter", train=micro_train_params(max_steps=4),
                   lora=micro_lora_params(), seed=0, use_unsloth=False)
    assert not r.unsloth and r.steps == 4 and r.train_tokens > 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_unsloth_path_trains(base_dir, tmp_path) -> None:
    pytest.importorskip("unsloth")
    rows = make_sft_rows(12)
    r = train_lora(base_dir, rows[:10], rows[10:], tmp_path / "adapter", train=micro_train_params(max_steps=4),
                   lora=micro_lora_params(), seed=0, use_unsloth=True)
    assert r.unsloth and r.steps == 4 and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert r.train_tokens > 0  # Unsloth's trainer logs no num_tokens: counted from the dataset


def test_tokens_trained_counts_the_rows_the_steps_consumed() -> None:
    from types import SimpleNamespace

    from datasets import Dataset

    args = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=3, world_size=1)
    trainer = SimpleNamespace(train_dataset=Dataset.from_dict({"input_ids": [[1, 2, 3, 4], [5, 6]]}), args=args)
    assert tokens_trained(trainer, 5) == 5 * 2 * 3 * 3.0  # 30 rows of mean length 3
    assert tokens_trained(SimpleNamespace(train_dataset=None, args=args), 5) == 0.0


# --- the stage scripts, for real -----------------------------------------------------------------------------


def _run_stage(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIRFLOW_NET_TRACKING": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _params_file(path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({
        "seed": 3,
        "base": micro_base_params(pretrain_steps=12, num_threads=1).model_dump(),
        "train": micro_train_params(max_steps=4, eval_steps=2, num_threads=1).model_dump(),
        "lora": micro_lora_params().model_dump(),
    }))
    return path


@pytest.mark.integration
def test_base_and_train_stages_write_their_outputs(corpus, tmp_path) -> None:
    params = _params_file(tmp_path / "params.yaml")
    proc = _run_stage([str(ROOT / "stages/base.py"), "--params", str(params), "--corpus", str(corpus),
                       "--out", "models/base", "--metrics", "metrics/base.json", "--plot", "plots/pretrain_loss.csv"],
                      tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = tmp_path / "models/base"
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "meta.json"} <= {
        p.name for p in base.iterdir()}
    m = json.loads((tmp_path / "metrics/base.json").read_text())
    assert m["pretrain_steps"] == 12 and m["final_loss"] < m["initial_loss"] and m["tokens_per_s"] > 0
    assert m["params"] > 100_000 and m["tokens_per_dag"] > 20
    plot = list(csv.DictReader((tmp_path / "plots/pretrain_loss.csv").open()))
    assert [r["step"] for r in plot] == [str(i) for i in range(1, 13)] and set(plot[0]) == {"step", "loss"}
    assert json.loads((base / "meta.json").read_text())["params"]["base"]["pretrain_steps"] == 12

    write_sft(tmp_path / "data/sft")
    proc = _run_stage([str(ROOT / "stages/train.py"), "--params", str(params), "--data", "data/sft", "--base",
                       "models/base", "--out", "models/adapter", "--metrics", "metrics/train.json",
                       "--plot", "plots/train_loss.csv"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    adapter = tmp_path / "models/adapter"
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "meta.json"} <= {
        p.name for p in adapter.iterdir()}
    assert is_ours(adapter)
    meta = json.loads((adapter / "meta.json").read_text())
    assert meta["inputs"]["base"] and meta["params"]["lora"]["r"] == 8 and "peft" in meta["versions"]
    t = json.loads((tmp_path / "metrics/train.json").read_text())
    assert t["steps"] == 4 and t["trainable_params"] > 0 and t["tokens_per_s"] > 0
    assert t["eval_loss_last"] < t["eval_loss_first"]
    curve = list(csv.DictReader((tmp_path / "plots/train_loss.csv").open()))
    assert list(curve[0]) == ["step", "train_loss", "eval_loss"]
    assert curve[0]["step"] == "0" and curve[0]["train_loss"] == "" and curve[0]["eval_loss"] != ""
    assert sum(1 for r in curve if r["train_loss"]) == 2  # logging_steps 2 over 4 steps
    # everything the stages wrote is a declared out
    written = {str(p.relative_to(tmp_path)).split("/")[0] for p in tmp_path.iterdir()}
    assert written == {"params.yaml", "models", "metrics", "plots", "data"}


@pytest.mark.integration
def test_base_stage_error_is_one_line(tmp_path) -> None:
    params = _params_file(tmp_path / "params.yaml")
    proc = _run_stage([str(ROOT / "stages/base.py"), "--params", str(params), "--corpus", str(tmp_path / "nothing"),
                       "--out", "o", "--metrics", "m.json", "--plot", "p.csv"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "dags.jsonl" in proc.stderr and not (tmp_path / "o").exists()
