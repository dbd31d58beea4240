"""ONNX Runtime: the T5 encoder and a one-token decoder step with past key values, greedy loop in numpy.

Optimum's exporter is not used: optimum-onnx 0.1 pins transformers < 4.58 and pip would downgrade our 5.23.
Instead two small wrapper modules over the Hugging Face model's own layers are exported with the TorchScript
exporter (``dynamo=False``: it needs no onnxscript and traces these loop-free wrappers exactly):

- ``encoder.onnx``: ``input_ids`` (1, S) -> ``cross_key``/``cross_value`` (L, H, S, d_kv), the decoder's
  cross-attention keys and values, computed once per query (the encoder states are needed only through them);
- ``decoder.onnx``: one token, ``past_key``/``past_value`` (L, H, T, d_kv) of the decoder's self-attention
  (T = 0 at the first step) and the cross keys/values -> ``logits`` (V,) and ``present_key``/``present_value``
  (L, H, T+1, d_kv).

int8 is ``onnxruntime.quantization.quantize_dynamic`` of the weight MatMuls (the LM head included; MatMuls
of two activations stay float), signed int8 weights with one scale per tensor. Measured on this AVX512-VNNI
VM (flan-t5-small shape, 24 tokens, 1 thread, P50 of two interleaved passes): QInt8 63 ms, per-channel QInt8
70 ms, QUInt8 78-82 ms; ORT's VNNI kernels multiply u8 activations by s8 weights, so QInt8 is also the
documented choice.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from airflow_net.rewrite.runtimes.base import Generation, Runtime
from airflow_net.rewrite.runtimes.tokenizer import load_tokenizer, save_tokenizer

log = logging.getLogger(__name__)

FILES = ("encoder.onnx", "decoder.onnx", "runtime.json", "tokenizer.json")
OPSET = 17


def _wrappers(model):
    """Encoder and decoder-step modules over ``model``'s layers (T5: no query scaling, bias folded in scores)."""
    import torch

    cfg = model.config
    heads, d_kv = cfg.num_heads, cfg.d_kv

    def attend(attn, x, k, v, bias):
        # x (Q, d); k, v (H, K, d_kv); bias (H, Q, K) or None
        q = attn.q(x).view(-1, heads, d_kv).transpose(0, 1)
        scores = torch.matmul(q, k.transpose(1, 2))
        if bias is not None:
            scores = scores + bias
        out = torch.matmul(torch.softmax(scores.float(), dim=-1), v)
        return attn.o(out.transpose(0, 1).reshape(-1, heads * d_kv))

    def split(lin, x):
        return lin(x).view(-1, heads, d_kv).transpose(0, 1)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.dec = model.encoder, model.decoder

        def forward(self, input_ids):
            h = self.enc.embed_tokens(input_ids[0])
            n = h.shape[0]
            bias = self.enc.block[0].layer[0].SelfAttention.compute_bias(n, n)[0]
            for block in self.enc.block:
                sa = block.layer[0]
                x = sa.layer_norm(h)
                h = h + attend(sa.SelfAttention, x, split(sa.SelfAttention.k, x), split(sa.SelfAttention.v, x), bias)
                h = block.layer[-1](h)
            h = self.enc.final_layer_norm(h)
            keys = [split(b.layer[1].EncDecAttention.k, h) for b in self.dec.block]
            values = [split(b.layer[1].EncDecAttention.v, h) for b in self.dec.block]
            return torch.stack(keys), torch.stack(values)

    class DecoderStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec, self.head = model.decoder, model.lm_head

        def forward(self, input_ids, past_key, past_value, cross_key, cross_value):
            h = self.dec.embed_tokens(input_ids[0])  # (1, d)
            past = past_key.shape[2]
            # The query sits at position `past`; it sees keys 0..past (causal, so no mask for one token).
            bias = self.dec.block[0].layer[0].SelfAttention.compute_bias(1, past + 1, past_seen_tokens=past)[0]
            keys, values = [], []
            for i, block in enumerate(self.dec.block):
                sa, ca = block.layer[0], block.layer[1]
                x = sa.layer_norm(h)
                k = torch.cat([past_key[i], split(sa.SelfAttention.k, x)], dim=1)
                v = torch.cat([past_value[i], split(sa.SelfAttention.v, x)], dim=1)
                keys.append(k)
                values.append(v)
                h = h + attend(sa.SelfAttention, x, k, v, bias)
                h = h + attend(ca.EncDecAttention, ca.layer_norm(h), cross_key[i], cross_value[i], None)
                h = block.layer[-1](h)
            h = self.dec.final_layer_norm(h)
            if cfg.scale_decoder_outputs:  # tied embeddings: the head sees d_model**-0.5-scaled states
                h = h * (cfg.d_model ** -0.5)
            return self.head(h)[0], torch.stack(keys), torch.stack(values)

    return Encoder().eval(), DecoderStep().eval()


class OnnxRuntime(Runtime):
    def __init__(self, encoder, decoder, tokenizer, meta: dict[str, Any], name: str) -> None:
        self.encoder, self.decoder, self.tokenizer = encoder, decoder, tokenizer
        self.meta = meta
        self.name = name

    @classmethod
    def export(cls, hf_folder: str, out_dir: str, quant: str | None = None) -> dict[str, Any]:
        import warnings

        import onnx
        import onnxruntime
        import torch
        from transformers import T5ForConditionalGeneration

        if quant not in (None, "int8"):
            raise ValueError(f"quant {quant!r}: expected None or 'int8'")
        if not (Path(hf_folder) / "config.json").is_file():
            raise ValueError(f"{hf_folder}: expected a Hugging Face T5 folder with config.json")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = T5ForConditionalGeneration.from_pretrained(hf_folder, dtype=torch.float32).eval()
        cfg = model.config
        encoder, decoder = _wrappers(model)
        layers, heads, d_kv = cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv
        ids = torch.tensor([[5, 6, 7, 1]], dtype=torch.long)
        past = torch.zeros(layers, heads, 3, d_kv)
        cross = torch.zeros(layers, heads, 4, d_kv)
        fp32 = {"encoder": out / "encoder.onnx", "decoder": out / "decoder.onnx"}
        tmp = {k: out / f"{k}.fp32.onnx" for k in fp32} if quant else fp32
        kv = {2: "len"}
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(
                encoder, (ids,), str(tmp["encoder"]), dynamo=False, opset_version=OPSET,
                input_names=["input_ids"], output_names=["cross_key", "cross_value"],
                dynamic_axes={"input_ids": {1: "src"}, "cross_key": {2: "src"}, "cross_value": {2: "src"}},
            )
            torch.onnx.export(
                decoder, (ids[:, :1], past, past, cross, cross), str(tmp["decoder"]), dynamo=False,
                opset_version=OPSET,
                input_names=["input_ids", "past_key", "past_value", "cross_key", "cross_value"],
                output_names=["logits", "present_key", "present_value"],
                dynamic_axes={"past_key": kv, "past_value": kv, "present_key": kv, "present_value": kv,
                              "cross_key": {2: "src"}, "cross_value": {2: "src"}},
            )
        if quant:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            level = root.level
            # The quantizer logs a line per tensor through the root logger at INFO; keep them out of stage logs.
            root.setLevel(max(level, logging.WARNING))
            try:
                for k in fp32:
                    quantize_dynamic(str(tmp[k]), str(fp32[k]), op_types_to_quantize=["MatMul"],
                                     weight_type=QuantType.QInt8)
                    tmp[k].unlink()
            finally:
                root.setLevel(level)
        meta = {
            "format": "airflow-net-t5-onnx", "quant": quant, "layers": layers, "heads": heads, "d_kv": d_kv,
            "decoder_start_token_id": int(cfg.decoder_start_token_id), "eos_token_id": int(cfg.eos_token_id),
        }
        (out / "runtime.json").write_text(json.dumps(meta, indent=2) + "\n")
        save_tokenizer(hf_folder, out_dir)
        facts = {f"{k}_bytes": fp32[k].stat().st_size for k in fp32}
        facts.update({"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "opset": OPSET})
        log.info("wrote ONNX encoder and decoder-with-past (%s) to %s", quant or "fp32", out)
        return facts

    @classmethod
    def load(cls, folder: str, threads: int, quant: str | None = None) -> OnnxRuntime:
        import onnxruntime as ort

        missing = [f for f in FILES if not (Path(folder) / f).is_file()]
        if missing:
            raise ValueError(f"{folder}: expected an ONNX export with {', '.join(FILES)} (missing {missing[0]})")
        meta = json.loads((Path(folder) / "runtime.json").read_text())
        if meta.get("format") != "airflow-net-t5-onnx" or meta.get("quant") != quant:
            raise ValueError(f"{folder}: expected an ONNX export with quant {quant!r}, "
                             f"found {meta.get('format')!r} with quant {meta.get('quant')!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op workers sleep instead of spinning. On this 2-core VM shared with other processes, spinning
        # at 2 threads made P50 2.2-2.4x slower (flan-t5-small shape: int8 280 vs 117 ms, fp32 815 vs 372 ms);
        # at 1 thread there is no worker to spin and it measured the same (108 vs 99 ms, noise).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        enc = ort.InferenceSession(str(Path(folder) / "encoder.onnx"), opts, providers=providers)
        dec = ort.InferenceSession(str(Path(folder) / "decoder.onnx"), opts, providers=providers)
        name = "onnx-int8" if quant else "onnx-fp32"
        return cls(enc, dec, load_tokenizer(folder), meta, name)

    def _greedy(self, ids: list[int], max_new_tokens: int, ignore_eos: bool) -> list[int]:
        m = self.meta
        cross_key, cross_value = self.encoder.run(None, {"input_ids": np.asarray([ids], dtype=np.int64)})
        past_key = np.zeros((m["layers"], m["heads"], 0, m["d_kv"]), dtype=np.float32)
        past_value = past_key
        token, out, eos = m["decoder_start_token_id"], [], m["eos_token_id"]
        for _ in range(max_new_tokens):
            logits, past_key, past_value = self.decoder.run(None, {
                "input_ids": np.asarray([[token]], dtype=np.int64), "past_key": past_key,
                "past_value": past_value, "cross_key": cross_key, "cross_value": cross_value,
            })
            if ignore_eos:
                # As transformers' min_new_tokens does: EOS is never chosen, the next best token is.
                logits[eos] = -np.inf
            token = int(np.argmax(logits))
            out.append(token)
            if token == eos:
                break
        return out

    def generate(self, queries: list[str], max_new_tokens: int, ignore_eos: bool = False) -> Generation:
        texts, ms, tokens = [], [], []
        for query in queries:
            start = time.perf_counter()
            out = self._greedy(self.tokenizer.encode(query).ids, max_new_tokens, ignore_eos)
            texts.append(self.tokenizer.decode(out, skip_special_tokens=True))
            ms.append((time.perf_counter() - start) * 1000.0)
            tokens.append(len(out))
        return Generation(texts, ms, tokens)
