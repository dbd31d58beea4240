"""PyTorch runtime: fp32, or dynamic int8 on the Linear layers."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from airflow_net.rewrite.runtimes.base import Generation, Runtime


class TorchRuntime(Runtime):
    loads_hf_folder = True

    def __init__(self, model, tokenizer, name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name

    @classmethod
    def export(cls, hf_folder: str, out_dir: str, quant: str | None = None) -> dict:
        """Nothing to write (PyTorch loads the HF folder); int8's size is its quantized weights, serialized."""
        if quant is None:
            return {}
        import io

        buf = io.BytesIO()
        torch.save(cls.load(hf_folder, threads=1, quant=quant).model.state_dict(), buf)
        return {"size_bytes": buf.tell()}

    @classmethod
    def load(cls, folder: str, threads: int, quant: str | None = None) -> TorchRuntime:
        from transformers import T5ForConditionalGeneration, T5Tokenizer

        if not (Path(folder) / "config.json").is_file():
            raise ValueError(f"{folder}: expected a Hugging Face T5 folder with config.json")
        if quant not in (None, "int8"):
            raise ValueError(f"quant {quant!r}: expected None or 'int8'")
        torch.set_num_threads(threads)
        tokenizer = T5Tokenizer.from_pretrained(folder)
        model = T5ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        if quant == "int8":
            # quantize_dynamic is deprecated in favour of torchao but still the
            # in-tree way to get int8 Linear kernels on CPU; silence only its notice.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", UserWarning)
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return cls(model, tokenizer, "torch-int8" if quant else "torch-fp32")

    @torch.inference_mode()
    def nbest(self, query: str, n: int, max_new_tokens: int) -> tuple[list[str], float, list[int]]:
        """The ``n`` best beams of one query (beam search, width ``n``), best first, the milliseconds, and each
        beam's generated tokens (its EOS counted, as in ``generate``)."""
        start = time.perf_counter()
        ids = self.tokenizer(query, return_tensors="pt").input_ids
        out = self.model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=n,
                                  num_return_sequences=n)
        texts = [self.tokenizer.decode(o, skip_special_tokens=True) for o in out]
        # each row: the decoder start token, the beam, then padding up to the longest beam
        pad = self.model.generation_config.pad_token_id
        tokens = [int((o[1:] != pad).sum()) for o in out]
        return texts, (time.perf_counter() - start) * 1000.0, tokens

    @torch.inference_mode()
    def generate(self, queries: list[str], max_new_tokens: int, ignore_eos: bool = False) -> Generation:
        texts, ms, tokens = [], [], []
        extra = {"min_new_tokens": max_new_tokens} if ignore_eos else {}
        for query in queries:
            start = time.perf_counter()
            ids = self.tokenizer(query, return_tensors="pt").input_ids
            out = self.model.generate(
                input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, **extra
            )
            # generate() prepends the decoder start token; it is not a generated token.
            tokens.append(int(out.shape[1]) - 1)
            texts.append(self.tokenizer.decode(out[0], skip_special_tokens=True))
            ms.append((time.perf_counter() - start) * 1000.0)
        return Generation(texts, ms, tokens)
