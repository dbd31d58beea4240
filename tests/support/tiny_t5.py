"""Build a tiny random-weight T5 folder (Flan-T5 layout: gated-gelu) with its own SentencePiece model."""

from __future__ import annotations

import io
from pathlib import Path

LINES = [
    f"{verb} the dag {name} every {n} minutes with retries {r}"
    for verb in ("schedule", "run", "create", "trigger", "build")
    for name in ("etl", "sales", "backup", "report", "sync", "clean")
    for n, r in ((5, 1), (10, 2), (30, 3), (60, 0))
]


def build_tiny_t5(folder: Path, seed: int = 0) -> Path:
    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(LINES), model_writer=buf, vocab_size=96, hard_vocab_limit=False,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, model_type="unigram",
    )
    (folder / "spiece.model").write_bytes(buf.getvalue())
    tokenizer = T5Tokenizer.from_pretrained(str(folder), extra_ids=0)
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
