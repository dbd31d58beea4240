"""CTranslate2: the T5 converted by its TransformersConverter, greedy ``Translator.translate_batch``.

The export stores the weights in the runtime's precision (``quantization="int8"`` for ct2-int8, float32
otherwise) beside the tokenizer files; load picks the matching compute type. Tokens go in and out as
SentencePiece pieces from ``tokenizer.json`` (see ``tokenizer``), with ``</s>`` appended as T5Tokenizer does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from airflow_net.rewrite.runtimes.base import Generation, Runtime
from airflow_net.rewrite.runtimes.tokenizer import load_tokenizer, save_tokenizer

log = logging.getLogger(__name__)

FILES = ("model.bin", "config.json", "shared_vocabulary.json", "runtime.json", "tokenizer.json")
# Why int8 is worth it here, and why a prototype saw it "no faster than fp32" (issue 15), measured on this
# 2-core VM (Xeon with AVX512-VNNI and AMX, flan-t5 shapes, random weights, 24 tokens, 1 thread):
# - get_supported_compute_types("cpu") is {int8, int8_float32, int16, float32}; on CPU int8 and int8_float32
#   are the same computation (int8 GEMMs, float32 for everything else). CT2_VERBOSE=1 shows the wheel's
#   backends: MKL for SGEMM and GEMM_S8 (packed, u8s8), and MKL_VERBOSE shows its oneMKL build dispatching
#   AVX-512 VNNI / AMX int8 kernels, the LM head included. No kernel is missing on this VM.
# - int8_float32 is 2-4x faster than float32 (interleaved bench, 89 input tokens, 1 thread): P50 145 vs 320 ms
#   on the flan-t5-small shape, 249 vs 960 ms on flan-t5-base; at 2 threads 137 vs 403 and 426 vs 1,520 ms.
#   compute_type "default" on a float32 conversion selects float32 (the verbose log says so): an "int8" run
#   that never asked for int8 at load, or loaded a float32 export with "default", measures float32 twice.
#   So the export stores int8 weights and load asks for int8_float32 explicitly (tests check it was selected).
# - CT2 selects its own kernels' ISA as AVX2 although AVX512 is present; CT2_FORCE_CPU_ISA=AVX512 was no
#   faster (within noise). CT2_USE_MKL=0 (oneDNN) kept int8 as fast but made float32 several times slower;
#   CT2_PACKED_GEMM=0 made both slower. Two threads were slower than one here: the VM's 2 cores are shared.
COMPUTE_TYPE = {None: "float32", "int8": "int8_float32"}
FORMAT = "airflow-net-t5-ct2"


@contextlib.contextmanager
def _t5_scale_from_config():
    """Make CTranslate2's T5 loader scale decoder outputs only when the model really does.

    ctranslate2 4.8.5 decides the d_model**-0.5 output scaling from ``config.tie_word_embeddings``, but
    transformers 5 forces that flag to True for every T5 and keeps the real answer in
    ``config.scale_decoder_outputs`` (False for Flan-T5 / T5 v1.1 with an untied head). Unpatched, the
    converted model scales its logits by a constant: greedy argmax survives, scores and probabilities do not.
    """
    from ctranslate2.converters import transformers as ct2t

    base = ct2t._MODEL_LOADERS["T5Config"]

    class Loader(type(base)):
        def get_model_spec(self, model):
            cfg = model.config
            tied = cfg.tie_word_embeddings
            cfg.tie_word_embeddings = getattr(cfg, "scale_decoder_outputs", tied)
            try:
                return super().get_model_spec(model)
            finally:
                cfg.tie_word_embeddings = tied

    ct2t._MODEL_LOADERS["T5Config"] = Loader()
    try:
        yield
    finally:
        ct2t._MODEL_LOADERS["T5Config"] = base


class Ct2Runtime(Runtime):
    def __init__(self, translator, tokenizer, vocabulary: list[str], name: str) -> None:
        self.translator, self.tokenizer = translator, tokenizer
        # Token -> id through the model's own vocabulary: a model whose vocab_size exceeds the tokenizer's
        # (the converter pads it with <extra_id_N>) can emit tokens the tokenizer has no id for.
        self.ids = {t: i for i, t in enumerate(vocabulary)}
        self.name = name

    @classmethod
    def export(cls, hf_folder: str, out_dir: str, quant: str | None = None) -> dict[str, Any]:
        import ctranslate2
        from ctranslate2.converters import TransformersConverter

        if quant not in COMPUTE_TYPE:
            raise ValueError(f"quant {quant!r}: expected None or 'int8'")
        if not (Path(hf_folder) / "config.json").is_file():
            raise ValueError(f"{hf_folder}: expected a Hugging Face T5 folder with config.json")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with _t5_scale_from_config():
            TransformersConverter(hf_folder).convert(out_dir, quantization=quant or "float32", force=True)
        save_tokenizer(hf_folder, out_dir)
        (Path(out_dir) / "runtime.json").write_text(json.dumps({"format": FORMAT, "quant": quant}) + "\n")
        log.info("wrote CTranslate2 model (%s weights) to %s", quant or "float32", out_dir)
        return {"model_bytes": (Path(out_dir) / "model.bin").stat().st_size, "ctranslate2": ctranslate2.__version__}

    @classmethod
    def load(cls, folder: str, threads: int, quant: str | None = None) -> Ct2Runtime:
        import ctranslate2

        if quant not in COMPUTE_TYPE:
            raise ValueError(f"quant {quant!r}: expected None or 'int8'")
        missing = [f for f in FILES if not (Path(folder) / f).is_file()]
        if missing:
            raise ValueError(f"{folder}: expected a CTranslate2 export with {', '.join(FILES)} "
                             f"(missing {missing[0]})")
        meta = json.loads((Path(folder) / "runtime.json").read_text())
        if meta.get("format") != FORMAT or meta.get("quant") != quant:
            raise ValueError(f"{folder}: expected a CTranslate2 export with quant {quant!r}, "
                             f"found {meta.get('format')!r} with quant {meta.get('quant')!r}")
        translator = ctranslate2.Translator(folder, device="cpu", compute_type=COMPUTE_TYPE[quant],
                                            inter_threads=1, intra_threads=threads)
        vocabulary = json.loads((Path(folder) / "shared_vocabulary.json").read_text())
        return cls(translator, load_tokenizer(folder), vocabulary, "ct2-int8" if quant else "ct2-fp32")

    def nbest(self, query: str, n: int, max_new_tokens: int) -> tuple[list[str], float, list[int]]:
        """The ``n`` best hypotheses of a beam search of width ``n``, best first, the milliseconds, and each
        hypothesis's generated tokens (its EOS counted, as in ``generate``)."""
        start = time.perf_counter()
        res = self.translator.translate_batch([self.tokenizer.encode(query).tokens], beam_size=n, num_hypotheses=n,
                                              max_decoding_length=max_new_tokens, min_decoding_length=0,
                                              return_end_token=True)[0]
        texts = [self.tokenizer.decode([self.ids[t] for t in hyp], skip_special_tokens=True) for hyp in res.hypotheses]
        return texts, (time.perf_counter() - start) * 1000.0, [len(hyp) for hyp in res.hypotheses]

    def generate(self, queries: list[str], max_new_tokens: int, ignore_eos: bool = False) -> Generation:
        texts, ms, tokens = [], [], []
        for query in queries:
            start = time.perf_counter()
            source = self.tokenizer.encode(query).tokens
            hyp = self.translator.translate_batch(
                [source], beam_size=1, max_decoding_length=max_new_tokens,
                # min_decoding_length masks EOS until then, as transformers' min_new_tokens does; its default (1)
                # would forbid an empty answer, which transformers allows.
                min_decoding_length=max_new_tokens if ignore_eos else 0,
                # The EOS counts as a generated token, as in the other runtimes.
                return_end_token=True,
            )[0].hypotheses[0]
            ids = [self.ids[t] for t in hyp]
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
            ms.append((time.perf_counter() - start) * 1000.0)
            tokens.append(len(hyp))
        return Generation(texts, ms, tokens)
