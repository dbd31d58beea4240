"""Flan-T5's real shapes with random weights, so runtime speeds are measured without downloading weights.

``shape:flan-t5-base`` builds a ``T5ForConditionalGeneration`` with exactly that model's dimensions (d_model,
d_ff, d_kv, layers, heads, 32,128-entry vocabulary, gated-GELU, untied LM head) and random weights. Its
tokenizer is the trained reformulator's SentencePiece model (its ids all fall inside the 32k vocabulary), so
queries tokenize to realistic lengths. The answers are meaningless; the speed is the real model's, since the
cost of a forward pass depends on shapes and storage types, not on values (the benchmark forces a fixed output
length). Built folders are cached under ``.cache/rewrite_shapes/<shape>-v<BUILD_VERSION>/``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from airflow_net.utils import UserError, atomic_path

log = logging.getLogger(__name__)

SHAPE_PREFIX = "shape:"
BUILD_VERSION = 1
# transformers' T5Config fields of google/flan-t5-* (their config.json files)
SHAPES: dict[str, dict[str, int]] = {
    "flan-t5-small": {"d_model": 512, "d_ff": 1024, "d_kv": 64, "num_layers": 8, "num_decoder_layers": 8,
                      "num_heads": 6},
    "flan-t5-base": {"d_model": 768, "d_ff": 2048, "d_kv": 64, "num_layers": 12, "num_decoder_layers": 12,
                     "num_heads": 12},
    "flan-t5-large": {"d_model": 1024, "d_ff": 2816, "d_kv": 64, "num_layers": 24, "num_decoder_layers": 24,
                      "num_heads": 16},
}
FLAN_T5_VOCAB = 32128


def is_shape(model: str) -> bool:
    return model.startswith(SHAPE_PREFIX)


def build_shape(model: str, tokenizer_folder: str | Path, cache: str | Path = ".cache/rewrite_shapes",
                seed: int = 0) -> Path:
    """The Hugging Face folder of ``shape:<name>`` (built once, then reused from the cache)."""
    name = model[len(SHAPE_PREFIX):] if is_shape(model) else model
    if name not in SHAPES:
        raise UserError(f"unknown shape {model!r}: expected one of {[SHAPE_PREFIX + s for s in SHAPES]}")
    tok_dir = Path(tokenizer_folder)
    if not (tok_dir / "spiece.model").is_file():
        raise UserError(f"{tok_dir}: expected a T5 folder with spiece.model (the shape's tokenizer); "
                        "run `dvc repro rewrite_train` first or pass --tokenizer")
    folder = Path(cache) / f"{name}-v{BUILD_VERSION}" / "hf"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import T5Tokenizer

    from airflow_net.params import RewriteModelParams
    from airflow_net.rewrite.model import build_tiny, save_model

    log.info("building %s with random weights in %s", model, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    dims = SHAPES[name]
    # build_tiny is the trained reformulator's builder (Flan-T5 layout, untied head, the tie flag saved right):
    # only the dimensions differ
    model_ = build_tiny(RewriteModelParams(**dims), FLAN_T5_VOCAB, seed)
    # T5's default init gives activations that overflow over 24 layers in fp16 runtimes; a small std keeps every
    # runtime finite without changing any cost.
    with torch.no_grad():
        for p in model_.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02)
    tok = T5Tokenizer.from_pretrained(str(tok_dir))
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_model(model_, tok, tmp)
        # llama.cpp's converter reads the SentencePiece model itself; transformers 5 may not re-save it
        if not (tmp / "spiece.model").is_file():
            shutil.copy2(tok_dir / "spiece.model", tmp / "spiece.model")
    return folder
