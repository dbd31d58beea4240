"""The benchmark's workload: prompts from the test split, rendered with the model's chat template, a fixed output
length with end-of-generation ignored, so every method does exactly the same work."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow_net.serve.engine import refuse_encoder_decoder
from airflow_net.utils import UserError, read_jsonl


@dataclass
class Workload:
    prompts: list[str]  # rendered chat prompts (the text each method tokenizes)
    prompt_tokens: list[int]  # their lengths in the GGUF's tokens
    max_tokens: int  # generated per request, exactly (end-of-generation ignored)
    mean_dag_tokens: float  # mean length of the reference DAG answers in the test split, in the same tokens
    eog_tokens: list[int]  # end-of-generation token ids (suppressed where a method has no ignore_eos)
    n_ctx: int  # context per sequence
    warmup: str = ""  # a prompt outside the requests, sent before the clock starts (maps the weights in)

    def requests(self) -> list[int]:
        """The prompt index of every request: each prompt once, in order (every run sends the same requests)."""
        return list(range(len(self.prompts)))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Workload:
        return cls(**json.loads(Path(path).read_text()))


def test_conversations(data_dir: Path, n: int, seed: int) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """(n distinct conversations without the answer, every reference answer): a seeded sample of the test split."""
    path = Path(data_dir) / "test.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: not found; the benchmark's prompts come from the test split (run `dvc repro prepare`)")
    rows = sorted(read_jsonl(path), key=lambda r: (r["uid"], r.get("variant") or ""))
    if not rows:
        raise UserError(f"{path}: the test split is empty")
    if len(rows) < n:
        raise UserError(f"bench.requests is {n - 1} but {path} has {len(rows)} conversations: every request is a "
                        f"distinct prompt and one more warms each method up, so lower bench.requests to at most "
                        f"{len(rows) - 1}")
    answers = [m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant"]
    random.Random(seed).shuffle(rows)
    convs = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows[:n]]
    return convs, answers


def build_workload(gguf: Path, data_dir: Path, *, n_requests: int, max_tokens: int, n_ctx: int, seed: int) -> Workload:
    """Render and measure the prompts with the model's own template and tokenizer (vocabulary only is loaded)."""
    import llama_cpp
    from llama_cpp import _internals
    from llama_cpp._logger import set_verbose
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    set_verbose(False)
    # one conversation more than the requests: the warm-up, so that no request finds its own prompt cached
    convs, answers = test_conversations(data_dir, n_requests + 1, seed)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = _internals.LlamaModel(path_model=str(gguf), params=params, verbose=False)
    try:
        refuse_encoder_decoder(model.model, gguf)
        meta = model.metadata()
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise UserError(f"{gguf}: no chat template in the GGUF (tokenizer.chat_template)")

        def text(t: int) -> str:
            return llama_cpp.llama_vocab_get_text(model.vocab, t).decode("utf-8", "replace") if t >= 0 else ""

        fmt = Jinja2ChatFormatter(template=template, eos_token=text(model.token_eos()), bos_token=text(model.token_bos()))
        prompts = [fmt(messages=c).prompt for c in convs]
        add_bos = model.add_bos_token()
        lengths = [len(model.tokenize(p.encode(), add_bos, True)) for p in prompts]
        dag_lengths = [len(model.tokenize(a.encode(), False, False)) for a in answers]
        eog = [t for t in range(model.n_vocab()) if llama_cpp.llama_vocab_is_eog(model.vocab, t)]
    finally:
        model.close()
    warmup = prompts.pop()
    lengths.pop()
    too_long = [n for n in lengths if n + max_tokens > n_ctx]
    if too_long:
        raise UserError(f"a prompt of {max(too_long)} tokens + max_tokens {max_tokens} does not fit bench.n_ctx {n_ctx}; "
                        "raise bench.n_ctx or lower bench.max_tokens")
    return Workload(prompts=prompts, prompt_tokens=lengths, max_tokens=max_tokens,
                    mean_dag_tokens=round(sum(dag_lengths) / len(dag_lengths), 1), eog_tokens=eog, n_ctx=n_ctx,
                    warmup=warmup)
