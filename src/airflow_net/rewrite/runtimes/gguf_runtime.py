"""llama.cpp runtime (GGUF, f16 / Q8_0 / Q4_0) through llama-cpp-python's low-level encoder-decoder calls.

llama-cpp-python's high-level ``Llama`` API and its server do not run T5 (its issue #1681), so this runtime
drives the C API directly: the query is tokenized by llama.cpp's own T5 (UGM) tokenizer from the GGUF (it
gives SentencePiece's ids, tested), read once by ``llama_encode``, and the decoder then starts from
``llama_model_decoder_start_token`` and runs one ``llama_decode`` per generated token, taking the argmax of
the last row of logits (a view on llama.cpp's buffer, no copy). The decoder's memory is cleared between
queries. The GGUF carries the tokenizer, so the export folder holds one file, ``model-<quant>.gguf``.

Export reuses the DAG model's tools (:mod:`airflow_net.export.gguf`): llama.cpp's converter writes f16
directly, or f32 which ``llama_model_quantize`` then turns into Q8_0 / Q4_0 (quantizing from f32 rather than
f16 avoids rounding the weights twice).

Cost (measured on this 2-core machine, one thread): llama.cpp's T5 decoder projects the encoder output to the
cross-attention keys and values again at every step (PyTorch caches them), so a token's ``llama_decode`` grows
with the query's length: flan-t5-small's shape at Q8_0, 4.1 ms per token with 8 source tokens, 5.8 with 32,
12.8 with 128, 32 with 256. Long queries bound this runtime, not the Python loop, whose share of a step (batch,
logits view, argmax over 32k) is 0.05-0.1 ms, under 0.5% of ``llama_decode``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from airflow_net.rewrite.runtimes.base import Generation, Runtime

log = logging.getLogger(__name__)

QUANTS = ("F16", "Q8_0", "Q4_0")
# Tokens of query + generated text one context holds, at most the model's n_ctx_train (512 for T5: llama.cpp
# warns beyond it); a longer query is refused (ValueError), never cut.
N_CTX = 512


def gguf_file(folder: str | Path, quant: str) -> Path:
    """The GGUF that export writes for ``quant`` (``model-q8_0.gguf``)."""
    return Path(folder) / f"model-{quant.lower()}.gguf"


@contextlib.contextmanager
def _quiet_llama():
    """Silence llama.cpp's log lines (per-tensor quantization notes, fallbacks) while inside; restore after.

    llama-cpp-python's ``set_verbose(False)`` lets warnings through with this llama.cpp (its log levels were
    renumbered, so a warning arrives as an error); its logger at CRITICAL prints nothing. Failures still surface:
    every call checked here returns a status.
    """
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_quant(quant: str | None) -> str:
    if quant not in QUANTS:
        raise ValueError(f"quant {quant!r}: expected one of {', '.join(QUANTS)}")
    return quant


class GgufRuntime(Runtime):
    def __init__(self, model: Any, ctx: Any, name: str) -> None:
        import llama_cpp

        self._ll = llama_cpp
        self._model = model  # _internals.LlamaModel / LlamaContext: they free the C objects on close
        self._ctx = ctx
        self.name = name
        self._vocab = model.vocab
        self.n_vocab = model.n_vocab()
        self._mem = llama_cpp.llama_get_memory(ctx.ctx)
        self._start = llama_cpp.llama_model_decoder_start_token(model.model)
        if self._start < 0:  # llama.cpp: -1 when the GGUF does not say; T5 starts from the pad token then
            self._start = llama_cpp.llama_vocab_pad(self._vocab)
        self._eog = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        self._eog_set = set(self._eog)
        self._n_ctx = llama_cpp.llama_n_ctx(ctx.ctx)
        self._tok_buf = (llama_cpp.llama_token * self._n_ctx)()
        self._one = (llama_cpp.llama_token * 1)()
        # The encoder's batch: every position an output (its states feed the decoder's cross-attention).
        self._enc_batch = llama_cpp.llama_batch_init(self._n_ctx, 0, 1)
        self._text_buf = ctypes.create_string_buffer(16 * self._n_ctx)

    # ------------------------------------------------------------------ export / load
    @classmethod
    def export(cls, hf_folder: str, out_dir: str, quant: str | None = None) -> dict[str, Any]:
        import llama_cpp._logger  # noqa: F401  (installs llama-cpp-python's log callback, which _quiet_llama mutes)

        from airflow_net.export.gguf import convert_to_gguf, inspect_gguf, quantize_gguf

        quant = _check_quant(quant)
        if not (Path(hf_folder) / "spiece.model").is_file():
            raise ValueError(f"{hf_folder}: expected a T5 folder with spiece.model (llama.cpp's converter needs it)")
        out = gguf_file(out_dir, quant)
        out.parent.mkdir(parents=True, exist_ok=True)
        if quant == "F16":
            convert_to_gguf(hf_folder, out, outtype="f16")
        else:
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp, _quiet_llama():
                f32 = convert_to_gguf(hf_folder, Path(tmp) / "model-f32.gguf", outtype="f32")
                quantize_gguf(f32, out, quant)
        info = inspect_gguf(out)
        if info.get("architecture") != "t5":
            raise ValueError(f"{out}: expected a t5 GGUF, the converter wrote {info.get('architecture')!r}")
        import llama_cpp

        return {"file": out.name, "bytes": out.stat().st_size, "tensor_types": info["tensor_types"],
                "llama_cpp_python": llama_cpp.__version__}

    @classmethod
    def load(cls, folder: str, threads: int, quant: str | None = None) -> GgufRuntime:
        import llama_cpp
        from llama_cpp import _internals

        quant = _check_quant(quant)
        path = gguf_file(folder, quant)
        if not path.is_file():
            raise ValueError(f"{path}: not found; expected the GGUF that `export` writes for {quant}")
        if threads < 1:
            raise ValueError(f"threads {threads}: expected >= 1")
        llama_cpp.llama_backend_init()
        with _quiet_llama():
            try:
                model = _internals.LlamaModel(path_model=str(path), params=llama_cpp.llama_model_default_params(),
                                              verbose=False)
            except ValueError as exc:
                raise ValueError(f"{path}: llama.cpp could not load it ({exc}); expected a T5 GGUF") from None
        if not llama_cpp.llama_model_has_encoder(model.model):
            model.close()
            raise ValueError(f"{path}: expected an encoder-decoder (T5) GGUF, this one has no encoder")
        n_ctx = min(N_CTX, llama_cpp.llama_model_n_ctx_train(model.model))
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        # The encoder reads the whole query in one ubatch, so both batch sizes are the context size.
        cparams.n_batch = n_ctx
        cparams.n_ubatch = n_ctx
        cparams.n_seq_max = 1
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = True
        with _quiet_llama():
            ctx = _internals.LlamaContext(model=model, params=cparams, verbose=False)
        return cls(model, ctx, f"gguf-{quant.lower()}")

    def close(self) -> None:
        """Free the batch, context and model (llama.cpp's notes on freeing them muted)."""
        with _quiet_llama():
            if self._enc_batch is not None:
                self._ll.llama_batch_free(self._enc_batch)
                self._enc_batch = None
            self._ctx.close()
            self._model.close()

    def __del__(self) -> None:
        # At interpreter exit llama_cpp's functions may already be gone: the OS frees the memory then.
        if getattr(self, "_enc_batch", None) is not None and not sys.is_finalizing():
            self.close()

    # ------------------------------------------------------------------ text
    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's T5 tokenization: SentencePiece's pieces, then </s> (as the HF tokenizer adds it)."""
        data = text.encode("utf-8")
        n = self._ll.llama_tokenize(self._vocab, data, len(data), self._tok_buf, self._n_ctx, True, False)
        if n < 0:
            raise ValueError(f"query of {-n} tokens: expected at most {self._n_ctx} (the context size)")
        return list(self._tok_buf[:n])

    def detokenize(self, tokens: list[int]) -> str:
        """Text of ``tokens`` without special tokens (as the HF tokenizer's skip_special_tokens)."""
        arr = (self._ll.llama_token * len(tokens))(*tokens)
        n = self._ll.llama_detokenize(self._vocab, arr, len(tokens), self._text_buf, len(self._text_buf), True, False)
        if n < 0:
            raise RuntimeError(f"llama_detokenize needs {-n} bytes, has {len(self._text_buf)}")
        return self._text_buf.raw[:n].decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ decoding
    def greedy_ids(self, src: list[int], max_new_tokens: int, ignore_eos: bool = False) -> list[int]:
        """Greedy decoder ids for source ids ``src`` (without the start token; the end token, if reached, last)."""
        ll, ctx = self._ll, self._ctx.ctx
        if not src or len(src) + max_new_tokens + 1 > self._n_ctx:
            raise ValueError(f"{len(src)} query tokens + {max_new_tokens} new: expected 1..{self._n_ctx} in all")
        ll.llama_memory_clear(self._mem, True)
        batch = self._enc_batch
        for i, t in enumerate(src):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, i, 1, True
            batch.seq_id[i][0] = 0
        batch.n_tokens = len(src)
        if ll.llama_encode(ctx, batch) != 0:
            raise RuntimeError("llama_encode failed")
        one, out = self._one, []
        token = self._start
        for _ in range(max_new_tokens):
            one[0] = token
            if ll.llama_decode(ctx, ll.llama_batch_get_one(one, 1)) != 0:
                raise RuntimeError("llama_decode failed")
            # A view on llama.cpp's row (no copy); argmax takes the first maximum, as HF's greedy search does.
            logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, -1), shape=(self.n_vocab,))
            token = int(logits.argmax())
            if token in self._eog_set:
                if not ignore_eos:
                    out.append(token)
                    break
                masked = logits.copy()  # the row is llama.cpp's: mask a copy
                masked[self._eog] = -np.inf
                token = int(masked.argmax())
            out.append(token)
        return out

    def generate(self, queries: list[str], max_new_tokens: int, ignore_eos: bool = False) -> Generation:
        texts, ms, tokens = [], [], []
        for query in queries:
            start = time.perf_counter()
            ids = self.greedy_ids(self.tokenize(query), max_new_tokens, ignore_eos)
            tokens.append(len(ids))
            texts.append(self.detokenize(ids))
            ms.append((time.perf_counter() - start) * 1000.0)
        return Generation(texts, ms, tokens)
