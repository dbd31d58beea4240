"""One in-process benchmark run, in its own process (so its peak memory is its own).

    python -m airflow_net.bench.worker METHOD WORKLOAD.json --model PATH --requests 0,1,2 --batch N --threads T

METHOD: ``llama-cpp`` (llama-cpp-python's Llama, one sequence, its own generate loop) or ``transformers-fp32`` /
``transformers-bf16`` (transformers' ``generate`` on ``--batch`` prompts at a time, left-padded). With ``--wait-go``
the worker loads its model, prints ``ready`` and waits for a line on standard input before it starts (so several
workers start together). It prints one JSON object: per-request records (wall-clock times) and its peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any

from airflow_net.bench.hardware import peak_rss_mb
from airflow_net.bench.workload import Workload


def peak_rss_self_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM (ru_maxrss would include the parent's memory at fork:
    Linux carries it across fork and exec)."""
    hwm = peak_rss_mb(os.getpid())
    if hwm is not None:
        return hwm
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20  # KiB on Linux, bytes on macOS


def run_llama_cpp(model: str, w: Workload, reqs: list[int], threads: int, ready: Any) -> list[dict[str, Any]]:
    from llama_cpp import Llama

    # flash attention on, as llama.cpp's "auto" resolves it on CPU for the engine and llama-server
    llm = Llama(model_path=model, n_ctx=w.n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512,
                flash_attn=True, verbose=False)
    tokens = [llm.tokenize(p.encode(), add_bos=llm._model.add_bos_token(), special=True) for p in w.prompts]
    warmup = llm.tokenize(w.warmup.encode(), add_bos=llm._model.add_bos_token(), special=True)

    def one(i: int, n: int) -> dict[str, Any]:
        prompt = tokens[i] if i >= 0 else warmup
        t0 = time.time()
        first = None
        got = 0
        # Llama.generate never stops by itself: end-of-generation is ignored by taking exactly n tokens
        for _ in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
            got += 1
            if first is None:
                first = time.time()
            if got >= n:
                break
        return {"prompt": i, "prompt_tokens": len(prompt), "completion_tokens": got, "t_start": t0,
                "t_first": first, "t_end": time.time()}

    one(-1, 4)  # warm-up on a prompt outside the requests: maps the weights in
    ready()
    return [one(i, w.max_tokens) for i in reqs]


def run_transformers(model: str, w: Workload, reqs: list[int], threads: int, batch: int, dtype: str, ready: Any
                     ) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(model, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    lm.eval()

    class FirstToken(BaseStreamer):
        """Notes when generate() produces its first new token (the first put() is the prompt)."""

        def __init__(self) -> None:
            self.calls, self.first = 0, None

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2 and self.first is None:
                self.first = time.time()

        def end(self) -> None:
            pass

    def run(idx: list[int], n: int) -> list[dict[str, Any]]:
        enc = tok([w.prompts[i] if i >= 0 else w.warmup for i in idx], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        streamer = FirstToken()
        t0 = time.time()
        with torch.inference_mode():
            out = lm.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=streamer,
                              pad_token_id=tok.pad_token_id)
        t1 = time.time()
        new = out.shape[1] - enc["input_ids"].shape[1]
        lens = enc["attention_mask"].sum(dim=1).tolist()
        return [{"prompt": i, "prompt_tokens": int(n_p), "completion_tokens": int(new), "t_start": t0,
                 "t_first": streamer.first, "t_end": t1} for i, n_p in zip(idx, lens, strict=True)]

    run([-1], 2)  # warm-up on a prompt outside the requests
    ready()
    records: list[dict[str, Any]] = []
    for k in range(0, len(reqs), batch):  # static batches: transformers' generate has no continuous batching
        records += run(reqs[k:k + batch], w.max_tokens)
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("method", choices=("llama-cpp", "transformers-fp32", "transformers-bf16"))
    ap.add_argument("workload")
    ap.add_argument("--model", required=True)
    ap.add_argument("--requests", required=True, help="comma-separated prompt indices")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--wait-go", action="store_true")
    args = ap.parse_args()
    w = Workload.load(args.workload)
    reqs = [int(x) for x in args.requests.split(",") if x]
    threads = args.threads or os.cpu_count() or 1

    def ready() -> None:
        if args.wait_go:
            print("ready", flush=True)
            sys.stdin.readline()

    if args.method == "llama-cpp":
        records = run_llama_cpp(args.model, w, reqs, threads, ready)
    else:
        records = run_transformers(args.model, w, reqs, threads, args.batch, args.method.split("-")[1], ready)
    print(json.dumps({"records": records, "peak_rss_mb": round(peak_rss_self_mb(), 1)}), flush=True)


if __name__ == "__main__":
    main()
