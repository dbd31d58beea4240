"""The base model: a tiny Qwen2 built and pre-trained here, or a Hugging Face model loaded as it is.

The tiny model is the offline default (no weights can be downloaded): its own BPE tokenizer
(:mod:`airflow_net.models.tokenizer`), a Qwen2 architecture at the dimensions in ``params.base``,
pre-trained as a causal LM on the corpus code so that "base" already writes Python-looking text and
the fine-tune has something to specialise. Any other ``base.model`` is loaded with ``from_pretrained``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airflow_net.data.prepare import split_uids
from airflow_net.models.tokenizer import ENDOFTEXT, IM_END, save_tokenizer, train_tokenizer
from airflow_net.params import BaseParams, PrepareParams
from airflow_net.utils import UserError, read_jsonl

log = logging.getLogger(__name__)

CORPUS_FILE = "dags.jsonl"
TINY = "tiny"


def _corpus_rows(corpus_dir: str | Path) -> list[dict]:
    """The corpus rows (``<corpus_dir>/dags.jsonl``) that carry a non-empty "source"; fails clearly if none do."""
    path = Path(corpus_dir) / CORPUS_FILE
    rows = [r for r in read_jsonl(path) if isinstance(r.get("source"), str) and r["source"].strip()]
    if not rows:
        raise UserError(f"{path}: no DAG sources found (expected rows with a non-empty 'source'; run the corpus stage)")
    return rows


def load_corpus_sources(corpus_dir: str | Path) -> list[str]:
    """The DAG sources of the corpus (``<corpus_dir>/dags.jsonl``, one JSON object per line with "source")."""
    return [r["source"] for r in _corpus_rows(corpus_dir)]


def train_split_sources(corpus_dir: str | Path, prepare: PrepareParams, seed: int) -> tuple[list[str], int]:
    """(sources of the train split's DAGs, number of DAGs held out): the prepare stage's split of each uid
    (:func:`airflow_net.data.prepare.split_uids`), so the tiny base never pre-trains on a val or test DAG."""
    rows = _corpus_rows(corpus_dir)
    uids = [r["uid"] for r in rows if isinstance(r.get("uid"), str)]
    parts = split_uids(uids, prepare, seed) if uids else {"val": [], "test": []}
    held_out = set(parts["val"]) | set(parts["test"])
    return [r["source"] for r in rows if r.get("uid") not in held_out], len(held_out)


def train_split_conversations(pairs: Sequence[dict], prepare: PrepareParams, seed: int) -> list[list[dict]]:
    """The train split's request/DAG pairs (the instruct stage's rows: uid, instruction, source) as chat
    conversations, exactly as prepare writes them (system prompt, request, fenced DAG): the split is prepare's
    (:func:`airflow_net.data.prepare.split_of`), so no val or test request is pre-trained on."""
    from airflow_net.data.prepare import split_of, to_messages

    out = []
    for row in pairs:
        uid, instruction, source = row.get("uid"), row.get("instruction"), row.get("source")
        if not (isinstance(uid, str) and isinstance(instruction, str) and isinstance(source, str)):
            raise UserError(f"instruction pair without uid/instruction/source strings: {sorted(row)!r}")
        if split_of(uid, prepare, seed) == "train":
            out.append(to_messages(prepare.system_prompt, instruction, source))
    return out


def build_tiny_model(params: BaseParams, tokenizer, *, seed: int):
    """A randomly initialised Qwen2ForCausalLM with the dimensions in ``params`` and tied embeddings."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=params.hidden_size,
        intermediate_size=params.intermediate_size,
        num_hidden_layers=params.num_layers,
        num_attention_heads=params.num_heads,
        num_key_value_heads=params.num_kv_heads,
        max_position_embeddings=params.max_position,
        tie_word_embeddings=True,  # the embedding is most of a tiny model: sharing it halves the size
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def count_params(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def encode_corpus(tokenizer, sources: Sequence[str]):
    """One token stream of all documents, each followed by ``<|endoftext|>``; plus each document's length."""
    import torch

    sep = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    ids: list[int] = []
    lengths: list[int] = []
    for ids_doc in tokenizer(list(sources), add_special_tokens=False)["input_ids"]:
        ids.extend(ids_doc)
        ids.append(sep)
        lengths.append(len(ids_doc))
    return torch.tensor(ids, dtype=torch.long), lengths


@dataclass
class PretrainResult:
    losses: list[float] = field(default_factory=list)  # one per step
    tokens: int = 0  # tokens processed (inputs), all steps
    seconds: float = 0.0
    seq_len: int = 0  # the window actually used (shorter than asked when the corpus is tiny)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def initial_loss(self) -> float | None:
        return self.losses[0] if self.losses else None

    @property
    def final_loss(self) -> float | None:
        """Mean of the last 10 steps: a single step's loss on random windows is noisy."""
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else None


def pretrain(
    model,
    stream,
    *,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
    conversations=None,
    conversation_share: float = 0.0,
) -> PretrainResult:
    """Causal-LM pre-training on random windows of ``stream`` (a 1-D LongTensor of token ids).

    ``conversations`` (optional): ``(stream, starts)``, chat conversations one after another and where each
    begins; a seeded ``conversation_share`` of each batch's rows are windows that start at a conversation's
    first token (the request in view when the DAG's ids are written), the rest windows of ``stream``.
    AdamW with a linear warm-up (5% of steps) and a cosine decay to 10% of ``lr``; gradients clipped at 1.
    Deterministic for a given seed and thread count. ``on_step(step, loss)`` is called after each step.
    """
    import torch
    from transformers import get_cosine_schedule_with_warmup

    result = PretrainResult()
    if steps <= 0:
        return result
    n = int(stream.numel())
    if n < 2:
        raise UserError("the corpus encodes to fewer than 2 tokens: nothing to pre-train on")
    if seq_len > n - 1:
        log.warning("corpus has only %d tokens: pre-training windows shortened from %d to %d", n, seq_len, n - 1)
        seq_len = n - 1
    result.seq_len = seq_len
    gen = torch.Generator().manual_seed(seed)
    n_conv = round(batch_size * conversation_share) if conversations is not None else 0
    if n_conv:
        conv_stream, conv_starts = conversations
        conv_starts = torch.as_tensor(conv_starts, dtype=torch.long)
        # a window that would run past the end starts earlier: every row is seq_len long
        conv_starts = conv_starts.clamp(max=int(conv_stream.numel()) - seq_len - 1)
        if int(conv_stream.numel()) < seq_len + 1:
            raise UserError(f"the conversations encode to {conv_stream.numel()} tokens: fewer than one "
                            f"pre-training window ({seq_len}); lower base.pretrain_seq_len")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    warmup = max(1, math.ceil(0.05 * steps))
    # num_cycles 0.45 ends the cosine at ~10% of lr rather than at zero: the last steps still learn.
    sched = get_cosine_schedule_with_warmup(opt, warmup, steps, num_cycles=0.45)
    model.train()
    model.config.use_cache = False
    offsets = torch.arange(seq_len)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        starts = torch.randint(0, n - seq_len + 1, (batch_size - n_conv,), generator=gen)
        batch = stream[starts[:, None] + offsets]
        if n_conv:
            picks = conv_starts[torch.randint(0, len(conv_starts), (n_conv,), generator=gen)]
            batch = torch.cat([conv_stream[picks[:, None] + offsets], batch])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise UserError(f"pre-training diverged at step {step} (loss {value}); lower base.pretrain_lr")
        result.losses.append(value)
        result.tokens += batch.numel()
        if on_step is not None:
            on_step(step, value)
        if step == 1 or step % 50 == 0 or step == steps:
            log.info("pretrain step %d/%d loss %.4f", step, steps, value)
    result.seconds = time.perf_counter() - t0
    model.eval()
    model.config.use_cache = True
    return result


def end_of_turn_token(tokenizer) -> str | None:
    """The token the chat template writes right after an assistant message: where generation must stop.

    Found by rendering a conversation with a known assistant reply and reading the first special token
    after that reply (``<|im_end|>`` for ChatML templates).
    """
    marker = "AIRFLOWNET_END_PROBE"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    after = text.split(marker, 1)[1] if marker in text else ""
    specials = sorted(set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab()), key=len, reverse=True)
    after = after.lstrip(" \n")
    for tok in specials:
        if tok and after.startswith(tok):
            return tok
    return None


def load_hf_base(model: str, *, dtype: str = "float32"):
    """Load a Hugging Face causal LM and its tokenizer (an id in the local cache or a local path).

    The tokenizer must have a chat template (fine-tuning and GGUF export need one). If the template
    ends an assistant turn with a token other than the tokenizer's EOS (base checkpoints often use
    ``<|endoftext|>`` while their template ends turns with ``<|im_end|>``), EOS is set to that token so
    that generation stops where the template ends a turn.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"base.model '{model}': could not load a tokenizer ({exc}). Expected 'tiny', a local model folder "
            "or a Hugging Face id already in the local cache"
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"base.model '{model}' has no chat template (tokenizer.chat_template is empty): use an instruct/chat "
            "variant of the model (e.g. Qwen/Qwen2.5-Coder-1.5B-Instruct) or base.model: tiny"
        )
    eot = end_of_turn_token(tokenizer)
    if eot and eot != tokenizer.eos_token:
        log.warning("EOS set from %r to %r: the chat template ends assistant turns with it", tokenizer.eos_token, eot)
        tokenizer.eos_token = eot
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise UserError(f"base.model '{model}': could not load the model weights ({exc})") from None
    lm.generation_config.eos_token_id = tokenizer.eos_token_id
    lm.config.eos_token_id = tokenizer.eos_token_id
    return lm, tokenizer


def save_base(model, tokenizer, out_dir: str | Path, *, ours: bool) -> None:
    """Model and tokenizer in HF format (``save_pretrained``); ``ours`` marks a tokenizer trained here."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    save_tokenizer(tokenizer, out_dir, ours=ours)


@dataclass
class TinyBase:
    model: object
    tokenizer: object
    result: PretrainResult
    tokens_per_dag: float
    corpus_tokens: int
    n_dags: int


def make_tiny_base(
    sources: Sequence[str],
    params: BaseParams,
    *,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
    conversations: Sequence[list[dict]] = (),
) -> TinyBase:
    """Train the tokenizer on ``sources`` (and the requests of ``conversations``), build the tiny Qwen2 and
    pre-train it (see :func:`pretrain`); ``conversations`` are mixed in at ``params.pretrain_requests``."""
    share = params.pretrain_requests if conversations else 0.0
    if params.pretrain_requests and not conversations:
        raise UserError("base.pretrain_requests > 0 but no train-split request/DAG pairs were given")
    requests = [m["content"] for c in conversations for m in c if m["role"] == "user"] if share else []
    tokenizer = train_tokenizer([*sources, *requests], params.vocab_size, model_max_length=params.max_position)
    if tokenizer.eos_token != IM_END:  # the GGUF export checks this too; fail here, where it is cheap
        raise RuntimeError(f"tokenizer EOS is {tokenizer.eos_token!r}, expected {IM_END!r}")
    model = build_tiny_model(params, tokenizer, seed=seed)
    stream, lengths = encode_corpus(tokenizer, sources)
    conv = None
    if share:
        texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
        conv_stream, conv_lengths = encode_corpus(tokenizer, texts)
        starts = [0]
        for k in conv_lengths[:-1]:
            starts.append(starts[-1] + k + 1)
        conv = (conv_stream, starts)
        log.info("pre-training mix: %.0f%% of rows from %d request/DAG conversations (%d tokens)", 100 * share,
                 len(texts), conv_stream.numel())
    log.info(
        "tiny Qwen2: %s parameters, %d layers, hidden %d; corpus %d DAGs, %d tokens",
        f"{count_params(model):,}", params.num_layers, params.hidden_size, len(sources), stream.numel(),
    )
    result = pretrain(
        model,
        stream,
        steps=params.pretrain_steps,
        batch_size=params.pretrain_batch_size,
        seq_len=params.pretrain_seq_len,
        lr=params.pretrain_lr,
        seed=seed,
        on_step=on_step,
        conversations=conv,
        conversation_share=share,
    )
    return TinyBase(
        model=model,
        tokenizer=tokenizer,
        result=result,
        tokens_per_dag=sum(lengths) / len(lengths),
        corpus_tokens=int(stream.numel()),
        n_dags=len(sources),
    )
