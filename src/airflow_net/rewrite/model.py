"""The reformulator's model: a tiny T5 of Flan-T5's architecture with its own SentencePiece tokenizer,
pre-trained briefly with span corruption, or a Hugging Face T5 (id or local path) used as it is.

Copying identifiers is the whole problem (a person writes ``invoices_sync``, the canonical request must
repeat it exactly). Measured here: the unigram model already splits ``snake_case`` ids at their underscores
into ordinary words (``ingest _ subscriptions _ from _ gcs``), which the model copies piece by piece. Making
``_``/``|``/``>>`` ``user_defined_symbols`` broke HF's decode (transformers 5 inserts spaces around them: 400 of
400 test texts failed to round-trip), so the tokenizer has none. Digits split one by one (cron fields) and
unknown characters fall back to bytes.

The untied LM head is initialised with std ``d_model**-0.5`` (Hugging Face's init gives std 1.0: a first loss
of ~21, and runs here that never learned to copy); ``save_model`` asserts the saved ``tie_word_embeddings``
flag matches the weights, since a transformers release re-saved an untied head as tied.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
from pathlib import Path

import torch

from airflow_net.params import RewriteModelParams

log = logging.getLogger(__name__)
N_SENTINELS = 100  # <extra_id_0..99>, as in T5: span corruption's placeholders


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path, seed: int):
    """SentencePiece unigram model at ``out_dir/spiece.model`` and the HF T5 tokenizer loaded from it."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    # From memory to memory: a model trained from a file records the file's (temporary) path and its own prefix
    # in its trainer spec, so the same texts gave a spiece.model with other bytes on every run.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t.replace("\n", " ") for t in texts]), model_writer=model,
        model_type="unigram", vocab_size=vocab_size,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,  # T5's ids: decoder start = pad = 0, eos = 1
        split_digits=True, byte_fallback=True,
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1,  # one thread: deterministic pieces
        input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2,
    )
    (out_dir / "spiece.model").write_bytes(model.getvalue())
    (out_dir / "spiece.vocab").unlink(missing_ok=True)
    # FIELD_NOTES: T5Tokenizer(vocab_file=...) maps words to <unk> in transformers 5; from_pretrained works
    tok = T5Tokenizer.from_pretrained(str(out_dir), extra_ids=N_SENTINELS, legacy=False)
    tok.save_pretrained(str(out_dir))
    return T5Tokenizer.from_pretrained(str(out_dir))


def build_tiny(p: RewriteModelParams, vocab: int, seed: int):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=vocab, d_model=p.d_model, d_ff=p.d_ff, d_kv=p.d_kv, num_layers=p.num_layers,
        num_decoder_layers=p.num_decoder_layers, num_heads=p.num_heads, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
    )
    model = T5ForConditionalGeneration(cfg)
    # transformers 5.23's T5Config forces tie_word_embeddings=True (it keeps only the "no output scaling" meaning
    # of False as scale_decoder_outputs), so the head comes out shared with the embeddings: untie it by hand,
    # as Flan-T5 is, and drop it from the tie map so neither training nor saving re-ties it.
    model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight))
    getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)
    with torch.no_grad():
        torch.nn.init.normal_(model.lm_head.weight, std=p.d_model**-0.5)
    return model


def assert_tie_flag(folder: Path) -> None:
    """The saved config's ``tie_word_embeddings`` must say what the weights are (FIELD_NOTES)."""
    from safetensors import safe_open

    cfg = json.loads((folder / "config.json").read_text())
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        separate = "lm_head.weight" in keys
        if separate and "shared.weight" in keys:
            separate = not torch.equal(f.get_tensor("lm_head.weight"), f.get_tensor("shared.weight"))
    tied_flag = cfg.get("tie_word_embeddings", True)
    if tied_flag == separate:
        raise RuntimeError(f"{folder}/config.json says tie_word_embeddings={tied_flag} but the LM head is "
                           f"{'separate' if separate else 'shared'}: converters would disagree with PyTorch")


def save_model(model, tok, folder: Path) -> None:
    model.config.use_cache = True
    model.generation_config.decoder_start_token_id = 0
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 0
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    # transformers 5.23 writes tie_word_embeddings: true whatever the weights are; a separate lm_head must say
    # false, or transformers 4.x, CTranslate2 and llama.cpp's converters tie it (FIELD_NOTES)
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    separate = model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    if cfg.get("tie_word_embeddings") == separate:
        cfg["tie_word_embeddings"] = not separate
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    assert_tie_flag(folder)


def span_corrupt(ids: list[int], rng: random.Random, density: float, sentinel0: int, mean_span: float = 3.0):
    """T5's span corruption on one sequence: (input with sentinels, target of sentinels + the spans)."""
    n = len(ids)
    n_mask = max(1, round(n * density))
    n_spans = max(1, round(n_mask / mean_span))
    starts = sorted(rng.sample(range(n), min(n_spans, n)))
    masked = [False] * n
    for s in starts:
        for j in range(s, min(n, s + max(1, round(rng.expovariate(1 / mean_span))))):
            masked[j] = True
    src, tgt, k, prev = [], [], 0, False
    for i, m in enumerate(ids):
        if masked[i]:
            if not prev:
                sid = sentinel0 - min(k, N_SENTINELS - 1)
                src.append(sid)
                tgt.append(sid)
                k += 1
            tgt.append(m)
        else:
            src.append(m)
        prev = masked[i]
    return src, tgt + [1]


def pretrain(model, tok, texts: list[str], p: RewriteModelParams, seed: int, max_len: int = 192) -> list[dict]:
    """Span-corruption pre-training on request text; returns the loss curve (step, loss)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    sentinel0 = tok.convert_tokens_to_ids("<extra_id_0>")  # T5's sentinels count down from here
    encoded = [tok(t, add_special_tokens=False)["input_ids"][: max_len - 1] for t in texts]
    encoded = [e for e in encoded if len(e) >= 4]
    opt = torch.optim.AdamW(model.parameters(), lr=p.pretrain_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    model.train()
    curve = []
    for step in range(p.pretrain_steps):
        batch = [span_corrupt(rng.choice(encoded), rng, p.noise_density, sentinel0) for _ in range(p.pretrain_batch_size)]
        ls = max(len(s) for s, _ in batch)
        lt = max(len(t) for _, t in batch)
        inp = torch.tensor([s + [0] * (ls - len(s)) for s, _ in batch])
        lab = torch.tensor([t + [-100] * (lt - len(t)) for _, t in batch])
        loss = model(input_ids=inp, attention_mask=(inp != 0).long(), labels=lab).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == p.pretrain_steps - 1:
            curve.append({"step": step, "loss": round(loss.item(), 4)})
            log.info("pretrain step %d/%d loss %.3f", step, p.pretrain_steps, loss.item())
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"pre-training diverged at step {step}: lower rewrite.model.pretrain_lr")
    model.eval()
    return curve
