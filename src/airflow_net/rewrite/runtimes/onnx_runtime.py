"""ONNX Runtime: the T5 encoder and a one-token decoder step with past key values, greedy loop in numpy.

Optimum's exporter is not used: optimum-onnx 0.1 pins transformers < 4.58 and pip would downgrade our 5.23.
Instead two small wrapper modules over the Hugging Face model's own layers are exported with the TorchScript
exporter (``dynamo=False``: it needs no onnxscript and traces these loop-free wrappers exactly):

- ``encoder.onnx``: ``input_ids`` (1, S) -> ``cross_key.<i>``/``cross_value.<i>`` (H, S, d_kv) for each decoder
  layer i, the cross-attention keys and values, computed once per query (the decoder needs the encoder's
  states only through them);
- ``decoder.onnx``: one token, ``bias`` (H, 1, T+1), ``past_key.<i>``/``past_value.<i>`` (H, T, d_kv) of the
  decoder's self-attention (T = 0 at the first step) and the cross keys/values -> ``logits`` (V,) and
  ``present_key.<i>``/``present_value.<i>`` (H, T+1, d_kv);
- ``decoder_bias.npy``: the decoder's relative-position bias by distance (:func:`decoder_bias_table`), from
  which the loop takes ``bias``.

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

FILES = ("encoder.onnx", "decoder.onnx", "decoder_bias.npy", "runtime.json", "tokenizer.json")
FORMAT = "airflow-net-t5-onnx-2"
OPSET = 17


BIAS_POSITIONS = 512  # decoder self-attention bias rows kept; T5's buckets are constant past max_distance (128)


def _wrappers(model):
    """Encoder and decoder-step modules over ``model``'s layers (T5: no query scaling, bias folded in scores).

    What ONNX Runtime spends its time on besides the weight MatMuls is small ops (measured with its profiler on
    the flan-t5-small shape: 390 nodes a decoder step, a third of the kernel time outside MatMuls), so the graph
    is written to have few: the self-attention's q/k/v and the gated feed-forward's wi_0/wi_1 are one MatMul
    each (concatenated weights, one dynamic quantization of the input instead of three or two), past keys and
    values are one input per layer (no Split/Squeeze/stack), and the decoder's relative-position bias is an
    input read from a table (no bucket arithmetic each step).
    """
    import torch

    cfg = model.config
    heads, d_kv = cfg.num_heads, cfg.d_kv
    inner = heads * d_kv

    def heads_first(t):  # (Q, H*d_kv) -> (H, Q, d_kv)
        return t.view(-1, heads, d_kv).transpose(0, 1)

    def fused(*linears):
        return torch.nn.Parameter(torch.cat([lin.weight for lin in linears], dim=0).detach().clone(),
                                  requires_grad=False)

    def attend(q, k, v, bias, o):
        # q (H, Q, d_kv); k, v (H, K, d_kv); bias (H, Q, K) or None
        scores = torch.matmul(q, k.transpose(1, 2))
        if bias is not None:
            scores = scores + bias
        out = torch.matmul(torch.softmax(scores.float(), dim=-1), v)
        return o(out.transpose(0, 1).reshape(-1, inner))

    class FeedForward(torch.nn.Module):
        """T5LayerFF without dropout; the gated form's two input projections as one MatMul."""

        def __init__(self, layer) -> None:
            super().__init__()
            self.norm, dense = layer.layer_norm, layer.DenseReluDense
            self.gated = hasattr(dense, "wi_0")
            self.wi = fused(dense.wi_0, dense.wi_1) if self.gated else dense.wi.weight
            self.act, self.wo = dense.act, dense.wo

        def forward(self, h):
            x = torch.nn.functional.linear(self.norm(h), self.wi)
            if self.gated:
                gate, lin = x.chunk(2, dim=-1)
                x = self.act(gate) * lin
            else:
                x = self.act(x)
            return h + self.wo(x)

    class SelfAttention(torch.nn.Module):
        def __init__(self, layer) -> None:
            super().__init__()
            self.norm, attn = layer.layer_norm, layer.SelfAttention
            self.qkv, self.o = fused(attn.q, attn.k, attn.v), attn.o

        def project(self, h):
            q, k, v = torch.nn.functional.linear(self.norm(h), self.qkv).chunk(3, dim=-1)
            return heads_first(q), heads_first(k), heads_first(v)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            enc, dec = model.encoder, model.decoder
            self.embed, self.final_norm = enc.embed_tokens, enc.final_layer_norm
            self.bias_layer = enc.block[0].layer[0].SelfAttention
            self.attn = torch.nn.ModuleList(SelfAttention(b.layer[0]) for b in enc.block)
            self.ff = torch.nn.ModuleList(FeedForward(b.layer[-1]) for b in enc.block)
            # every decoder layer's cross keys and values in one MatMul of the encoder's output
            self.cross = fused(*[lin for b in dec.block for lin in (b.layer[1].EncDecAttention.k,
                                                                    b.layer[1].EncDecAttention.v)])

        def forward(self, input_ids):
            h = self.embed(input_ids[0])
            n = h.shape[0]
            bias = self.bias_layer.compute_bias(n, n)[0]
            for attn, ff in zip(self.attn, self.ff, strict=True):
                q, k, v = attn.project(h)
                h = ff(h + attend(q, k, v, bias, attn.o))
            kv = torch.nn.functional.linear(self.final_norm(h), self.cross).chunk(2 * len(model.decoder.block), -1)
            return tuple(heads_first(t) for t in kv)  # key 0, value 0, key 1, ...

    class DecoderStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            dec = model.decoder
            self.embed, self.final_norm, self.head = dec.embed_tokens, dec.final_layer_norm, model.lm_head
            self.attn = torch.nn.ModuleList(SelfAttention(b.layer[0]) for b in dec.block)
            self.cross_norm = torch.nn.ModuleList(b.layer[1].layer_norm for b in dec.block)
            self.cross_q = torch.nn.ModuleList(b.layer[1].EncDecAttention.q for b in dec.block)
            self.cross_o = torch.nn.ModuleList(b.layer[1].EncDecAttention.o for b in dec.block)
            self.ff = torch.nn.ModuleList(FeedForward(b.layer[-1]) for b in dec.block)

        def forward(self, input_ids, bias, *kv):
            # kv: past key, past value per layer, then cross key, cross value per layer; bias (H, 1, T+1)
            n = len(self.attn)
            h = self.embed(input_ids[0])  # (1, d)
            presents = []
            for i in range(n):
                attn = self.attn[i]
                q, k, v = attn.project(h)
                k = torch.cat([kv[2 * i], k], dim=1)
                v = torch.cat([kv[2 * i + 1], v], dim=1)
                presents += [k, v]
                h = h + attend(q, k, v, bias, attn.o)
                cq = heads_first(self.cross_q[i](self.cross_norm[i](h)))
                h = h + attend(cq, kv[2 * n + 2 * i], kv[2 * n + 2 * i + 1], None, self.cross_o[i])
                h = self.ff[i](h)
            h = self.final_norm(h)
            if cfg.scale_decoder_outputs:  # tied embeddings: the head sees d_model**-0.5-scaled states
                h = h * (cfg.d_model ** -0.5)
            return (self.head(h)[0], *presents)

    return Encoder().eval(), DecoderStep().eval()


def decoder_bias_table(model, positions: int = BIAS_POSITIONS):
    """(H, positions) float32: the decoder self-attention's bias for a key ``d`` tokens before the query, at
    column ``d``; computed by the model's own ``compute_bias`` (T5 buckets: exact, and constant past
    ``relative_attention_max_distance``, which ``positions`` must exceed)."""
    import torch

    layer = model.decoder.block[0].layer[0].SelfAttention
    if positions <= layer.relative_attention_max_distance:
        raise ValueError(f"positions {positions}: expected more than max_distance "
                         f"{layer.relative_attention_max_distance}")
    with torch.no_grad():
        row = layer.compute_bias(1, positions, past_seen_tokens=positions - 1)[0, :, 0, :]  # keys 0..P-1
    return row.flip(-1).float().numpy().copy()  # column d: the key d tokens before the query


def _options(ort, threads: int, *, spin: bool):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return opts


def _kv_names(layers: int) -> dict[str, list[str]]:
    def pairs(kind: str) -> list[str]:
        return [f"{kind}_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]

    return {"past": pairs("past"), "present": pairs("present"), "cross": pairs("cross")}


class OnnxRuntime(Runtime):
    format_version = 2  # 2: one input per layer, fused projections, decoder_bias.npy
    def __init__(self, encoder, decoder, tokenizer, meta: dict[str, Any], name: str, table: np.ndarray) -> None:
        self.encoder, self.decoder, self.tokenizer = encoder, decoder, tokenizer
        self.meta = meta
        self.name = name
        self._table, self._biases = table, []
        self._names = _kv_names(meta["layers"])
        self._empty = np.zeros((meta["heads"], 0, meta["d_kv"]), dtype=np.float32)

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
        past = [torch.zeros(heads, 3, d_kv)] * (2 * layers)
        cross = [torch.zeros(heads, 4, d_kv)] * (2 * layers)
        fp32 = {"encoder": out / "encoder.onnx", "decoder": out / "decoder.onnx"}
        tmp = {k: out / f"{k}.fp32.onnx" for k in fp32} if quant else fp32
        names = _kv_names(layers)
        seq = {1: "len"}
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(
                encoder, (ids,), str(tmp["encoder"]), dynamo=False, opset_version=OPSET,
                input_names=["input_ids"], output_names=names["cross"],
                dynamic_axes={"input_ids": {1: "src"}, **{n: {1: "src"} for n in names["cross"]}},
            )
            torch.onnx.export(
                decoder, (ids[:, :1], torch.zeros(heads, 1, 4), *past, *cross), str(tmp["decoder"]), dynamo=False,
                opset_version=OPSET,
                input_names=["input_ids", "bias", *names["past"], *names["cross"]],
                output_names=["logits", *names["present"]],
                dynamic_axes={"bias": {2: "keys"}, **{n: seq for n in names["past"] + names["present"]},
                              **{n: {1: "src"} for n in names["cross"]}},
            )
        np.save(out / "decoder_bias.npy", decoder_bias_table(model))
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
            "format": FORMAT, "quant": quant, "layers": layers, "heads": heads, "d_kv": d_kv,
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
        if meta.get("format") != FORMAT or meta.get("quant") != quant:
            raise ValueError(f"{folder}: expected an ONNX export with quant {quant!r}, "
                             f"found {meta.get('format')!r} with quant {meta.get('quant')!r}")
        providers = ["CPUExecutionProvider"]
        # Each session has its own intra-op pool. With threads > 1 only the decoder's workers spin between
        # steps: a decode step is ~2 ms of small kernels, too short for workers that sleep and wake. The encoder
        # runs once per query and never spins, because two spinning pools fight over the cores. Measured on the idle
        # 2-core VM (flan-t5-small shape, int8, 24 tokens, P50): 1 thread 57.4 ms; 2 threads with only the decoder
        # spinning 43.4-43.8 ms; no pool spinning 67.8 ms; both pools spinning 69.6-71.3 ms. At 1 thread there is no
        # worker to spin.
        enc = ort.InferenceSession(str(Path(folder) / "encoder.onnx"), _options(ort, threads, spin=False),
                                   providers=providers)
        dec = ort.InferenceSession(str(Path(folder) / "decoder.onnx"), _options(ort, threads, spin=threads > 1),
                                   providers=providers)
        name = "onnx-int8" if quant else "onnx-fp32"
        table = np.load(Path(folder) / "decoder_bias.npy")
        return cls(enc, dec, load_tokenizer(folder), meta, name, table)

    def _bias(self, keys: int) -> np.ndarray:
        """(H, 1, keys): the self-attention bias of the query at position keys-1 over keys 0..keys-1."""
        while len(self._biases) < keys:
            d = np.minimum(np.arange(len(self._biases), -1, -1), self._table.shape[1] - 1)
            self._biases.append(np.ascontiguousarray(self._table[:, None, d]))
        return self._biases[keys - 1]

    def _greedy(self, ids: list[int], max_new_tokens: int, ignore_eos: bool) -> list[int]:
        m = self.meta
        names = self._names
        cross = self.encoder.run(None, {"input_ids": np.asarray([ids], dtype=np.int64)})
        feed = dict(zip(names["cross"], cross, strict=True))
        feed.update({n: self._empty for n in names["past"]})
        token, out, eos = m["decoder_start_token_id"], [], m["eos_token_id"]
        for step in range(max_new_tokens):
            feed["input_ids"] = np.asarray([[token]], dtype=np.int64)
            feed["bias"] = self._bias(step + 1)
            logits, *present = self.decoder.run(None, feed)
            feed.update(zip(names["past"], present, strict=True))
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
