"""A continuous-batching inference engine over llama-cpp-python's low-level API.

One llama.cpp context holds ``n_parallel`` sequences (slots), each with its own part of the KV cache. Every
step builds one batch: the last sampled token of each generating slot, then the next chunk of one prompt still
being read (the oldest request's; chunked, so a long prompt does not stall the others), and runs
``llama_decode`` once. Running sequences are kept on the lowest sequence ids (a finished slot in the middle is
filled by moving the highest one's KV stream down), so llama.cpp decodes them in one pass rather than one per
run of ids. Each slot then samples its next token with its own sampler chain (per-request temperature, top-p,
seed, penalties, logit bias; plain greedy is an argmax of the row), checks its stop conditions and streams its
text. Requests beyond the slots wait in a FIFO queue and are admitted as soon as a slot frees up (continuous
batching); a cancelled request frees its slot at the next step. A slot keeps its KV cache after a request ends,
and a new request goes to the free slot that shares the longest prompt prefix with it; when another slot (running
or not) shares a longer one, its KV stream is copied over first, so a common system prompt is read once.

Threading: only the engine's own thread (``start()``) or a synchronous caller (``generate_many``) touches the
llama.cpp context; ``submit`` and ``Request.cancel`` are safe from any thread. ``llama_decode`` releases the
GIL, so an HTTP server keeps answering while the engine computes.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from airflow_net.utils import UserError

log = logging.getLogger(__name__)

DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp: a random seed
FINISH_REASONS = ("stop", "length", "cancelled", "error")
# A new request takes another slot's cached prefix (a copy of that slot's whole KV stream) when it saves reading
# at least this many more prompt tokens than the chosen slot's own cache: the copy costs about as much as reading
# a few tokens (0.5B model, 1,024-token slots: 13 MB, ~3 ms; one prompt token: ~4 ms on 2 cores).
MIN_PREFIX_COPY = 32


def refuse_encoder_decoder(model: Any, path: str | Path) -> None:
    """UserError when a loaded llama.cpp model (a ``llama_model_p``) is an encoder-decoder: the DAG engine, the
    benchmark and llama-cpp-python's high-level API only run decoder-only models, and would crash on a T5."""
    import llama_cpp

    if llama_cpp.llama_model_has_encoder(model):
        raise UserError(f"{path} is an encoder-decoder (T5) GGUF, which the DAG engine cannot run: use it with the "
                        f"rewrite runtimes (`airflow-net rewrite --runtime gguf-q8_0 --model DIR`)")


class PromptTooLong(UserError):
    """The prompt does not fit a slot's context; the message gives the limits."""


class EngineClosed(RuntimeError):
    """The engine is shutting down and takes no new requests."""


@dataclass(frozen=True)
class SamplingParams:
    """What a request asks for; the defaults are greedy decoding."""

    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    seed: int | None = None  # None: random (only matters when temperature > 0)
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # keep generating past the end-of-generation tokens (benchmarks)
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    logit_bias: tuple[tuple[int, float], ...] = ()
    # identifiers the answer's id strings (dag_id=, task_id=, group_id=, @dag/@task names) must be copied from;
    # empty: no constraint (airflow_net.serve.copy_ids)
    copy_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be >= 1 (got {self.max_tokens})")
        if not 0 <= self.temperature <= 10:
            problems.append(f"temperature must be in [0, 10] (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (got {self.top_k})")
        if not 0 <= self.min_p <= 1:
            problems.append(f"min_p must be in [0, 1] (got {self.min_p})")
        if any(not s for s in self.stop):
            problems.append("stop strings must not be empty")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class Delta:
    """A piece of a request's output, in order: new text, the tokens it came from, and at the end a reason."""

    text: str
    tokens: list[int]
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class Completion:
    """A finished request."""

    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens reused from the slot's KV cache
    queued_s: float  # from submit to the slot taking it
    ttft_s: float  # from submit to the first token
    seconds: float  # from submit to the end
    error: str | None = None


@dataclass
class Request:
    """A submitted request. Iterate ``deltas()`` (or pass ``on_delta``) to stream; ``result()`` waits for the end."""

    id: int
    prompt_tokens: list[int]
    params: SamplingParams
    on_delta: Callable[[Delta], None] | None = None
    t_submit: float = field(default_factory=time.perf_counter)
    t_start: float | None = None
    t_first: float | None = None
    t_end: float | None = None
    cached_tokens: int = 0
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    _cancelled: bool = False
    _done: threading.Event = field(default_factory=threading.Event)
    _queue: collections.deque = field(default_factory=collections.deque)
    _cv: threading.Condition = field(default_factory=threading.Condition)
    _engine: Engine | None = None

    def cancel(self) -> None:
        """Stop this request (a client went away): its slot is freed at the engine's next step."""
        if not self._done.is_set() and self._engine is not None:
            self._engine._cancel(self)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _emit(self, delta: Delta) -> None:
        self.text += delta.text
        if self.on_delta is not None:
            self.on_delta(delta)
        else:
            with self._cv:
                self._queue.append(delta)
                self._cv.notify_all()
        if delta.finish_reason is not None:
            self._done.set()

    def deltas(self, timeout: float | None = None) -> Iterator[Delta]:
        """The output as it is produced (for a caller that did not pass ``on_delta``)."""
        if self.on_delta is not None:
            raise RuntimeError("this request streams to its on_delta callback")
        while True:
            with self._cv:
                if not self._cv.wait_for(lambda: self._queue, timeout=timeout):
                    raise TimeoutError(f"request {self.id}: no output for {timeout} s")
                d = self._queue.popleft()
            yield d
            if d.finish_reason is not None:
                return

    def result(self, timeout: float | None = None) -> Completion:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        assert self.t_end is not None and self.finish_reason is not None
        return Completion(
            text=self.text,
            tokens=list(self.tokens),
            finish_reason=self.finish_reason,
            prompt_tokens=len(self.prompt_tokens),
            completion_tokens=len(self.tokens),
            cached_tokens=self.cached_tokens,
            queued_s=(self.t_start or self.t_end) - self.t_submit,
            ttft_s=(self.t_first or self.t_end) - self.t_submit,
            seconds=self.t_end - self.t_submit,
            error=self.error,
        )


class _Slot:
    """One sequence of the context: its KV cache contents and the request it is serving."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.kv_tokens: list[int] = []  # tokens whose keys/values are in the cache, positions 0..n-1
        self.req: Request | None = None
        self.pending: list[int] = []  # prompt tokens still to read
        self.next_token: int | None = None  # sampled, to be fed at the next step
        self.sampler: Any = None
        self.decoder: Any = None
        self.held = ""  # text held back: it could be the start of a stop string
        self.greedy = False  # plain greedy decoding: argmax, no sampler chain
        self.copy: Any = None  # an IdConstraint when the request asked to copy its ids
        self.answer = ""  # the answer's text so far, kept only for the constraint

    @property
    def free(self) -> bool:
        return self.req is None


class Engine:
    """Continuous batching over ``n_parallel`` slots of ``n_ctx`` tokens each; see the module docstring."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_parallel: int = 4,
        n_ctx: int = 2048,
        n_batch: int = 512,
        n_threads: int = 0,
        flash_attn: str = "auto",
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        set_verbose(verbose)  # llama.cpp's own log lines: errors only unless asked

        self._ll = llama_cpp
        path = Path(model_path)
        if not path.is_file():
            raise UserError(f"{path}: GGUF model not found (run `dvc repro export` or pass a .gguf file)")
        if n_parallel < 1:
            raise UserError(f"n_parallel must be >= 1 (got {n_parallel})")
        if n_batch < n_parallel:  # every generating slot puts one token in each step's batch
            raise UserError(f"n_batch ({n_batch}) must be >= n_parallel ({n_parallel}); raise --batch")
        self.model_path = path
        self.n_parallel = n_parallel
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.seed = seed
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        try:
            self._model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        except ValueError as exc:
            raise UserError(f"{path}: llama.cpp could not load it ({exc}); expected a GGUF model file") from None
        try:
            refuse_encoder_decoder(self._model.model, path)
        except UserError:
            self._model.close()
            raise
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx * n_parallel
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(n_batch, 512)
        cparams.n_seq_max = n_parallel
        cparams.kv_unified = False  # one KV stream per slot: a sequence attends only to its own cache
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.flash_attn_type = {
            "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[flash_attn]
        cparams.no_perf = True
        self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        self.n_ctx = llama_cpp.llama_n_ctx_seq(self._ctx.ctx)  # per slot, after llama.cpp's rounding
        self.n_batch = llama_cpp.llama_n_batch(self._ctx.ctx)
        self._mem = self._ctx.memory
        self._vocab = self._model.vocab
        self.n_vocab = self._model.n_vocab()
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._eog = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        self._eog_set = set(self._eog)
        self.eos_token = self._model.token_eos()  # what ends an answer (the export checks it is the end of turn)
        self._pieces: dict[int, bytes] = {}
        self._vocab_index: Any = None  # built on the first request that copies ids
        self._piece_buf = ctypes.create_string_buffer(256)
        self.metadata = self._model.metadata()
        self.add_bos = self._model.add_bos_token()
        self.model_size = llama_cpp.llama_model_size(self._model.model)
        self.n_params = llama_cpp.llama_model_n_params(self._model.model)

        self._slots = [_Slot(i) for i in range(n_parallel)]
        self._queue: collections.deque[Request] = collections.deque()
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._cancels: set[int] = set()
        self.stats = collections.Counter()  # cumulative counts for /metrics
        self.on_finish: Callable[[Request], None] | None = None  # metrics hook, called on the engine thread
        log.info("engine: %s, %d slots x %d tokens, %d threads", path.name, n_parallel, self.n_ctx, self.n_threads)

    # ---------------------------------------------------------------- text
    def tokenize(self, text: str, *, special: bool = True, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text`` (special tokens such as <|im_start|> parsed, as in a rendered chat prompt)."""
        bos = self.add_bos if add_bos is None else add_bos
        return self._model.tokenize(text.encode("utf-8"), bos, special)

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (control tokens: nothing)."""
        p = self._pieces.get(token)
        if p is None:
            n = self._ll.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
            p = self._piece_buf.raw[: max(0, n)]
            self._pieces[token] = p
        return p

    def vocab_index(self) -> Any:
        """Every token's text, indexed for the id-copying constraint (built once, on first use)."""
        if self._vocab_index is None:
            from airflow_net.serve.copy_ids import VocabIndex

            self._vocab_index = VocabIndex.from_pieces(self.n_vocab, self.piece)
        return self._vocab_index

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The prompt for a chat, rendered with the GGUF's own chat template (as llama-cpp-python does)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.chat_template()
        if not template:
            raise UserError(f"{self.model_path.name}: the GGUF has no chat template (tokenizer.chat_template)")
        fmt = getattr(self, "_formatter", None)
        if fmt is None:
            def text(t: int) -> str:
                return self._ll.llama_vocab_get_text(self._vocab, t).decode("utf-8", "replace") if t >= 0 else ""

            fmt = self._formatter = Jinja2ChatFormatter(
                template=template, eos_token=text(self._model.token_eos()), bos_token=text(self._model.token_bos())
            )
        return fmt(messages=messages).prompt

    # ---------------------------------------------------------------- requests
    def check_prompt(self, n_prompt: int) -> None:
        if n_prompt == 0:
            raise PromptTooLong("the prompt is empty; expected at least one token")
        if n_prompt >= self.n_ctx:
            raise PromptTooLong(
                f"the prompt has {n_prompt} tokens but a slot's context holds {self.n_ctx} "
                f"(prompt + completion must fit; start the server with a larger --ctx-size or send a shorter prompt)"
            )

    def submit(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        on_delta: Callable[[Delta], None] | None = None,
    ) -> Request:
        """Queue a request (a prompt string or token ids). Raises PromptTooLong if it cannot fit a slot."""
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        self.check_prompt(len(tokens))
        req = Request(id=next(self._ids), prompt_tokens=tokens, params=params or SamplingParams(), on_delta=on_delta)
        req._engine = self
        with self._lock:
            if self._closed or self._stopping:
                raise EngineClosed("the engine is shutting down")
            self._queue.append(req)
            self.stats["requests_submitted"] += 1
            self._lock.notify_all()
        return req

    def _cancel(self, req: Request) -> None:
        with self._lock:
            req._cancelled = True
            self._cancels.add(req.id)
            self._lock.notify_all()

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    @property
    def active(self) -> int:
        return sum(not s.free for s in self._slots)

    def busy(self) -> bool:
        return bool(self._queue) or any(not s.free for s in self._slots)

    # ---------------------------------------------------------------- the loop
    def _new_sampler(self, p: SamplingParams) -> Any:
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        bias = dict(p.logit_bias)
        if p.ignore_eos:
            bias.update({t: float("-inf") for t in self._eog})
        if bias:
            arr = (ll.llama_logit_bias * len(bias))()
            for i, (t, b) in enumerate(bias.items()):
                arr[i].token, arr[i].bias = t, b
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_logit_bias(self.n_vocab, len(bias), arr))
        if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_penalties(
                self.n_vocab, p.penalty_last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty))
        if p.temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:
            if p.top_k > 0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(p.top_k))
            if p.top_p < 1.0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(p.top_p, 1))
            if p.min_p > 0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(p.min_p, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(p.temperature))
            seed = DEFAULT_SEED if p.seed is None else p.seed & 0xFFFFFFFF
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed))
        return chain

    @staticmethod
    def _common(a: Sequence[int], b: Sequence[int]) -> int:
        n = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            n += 1
        return n

    def _admit(self, req: Request, now: float) -> None:
        """Give the request the free slot whose cache shares the longest prefix with its prompt; if another slot
        (running or free) holds a prefix at least MIN_PREFIX_COPY tokens longer, copy that slot's KV stream in."""
        shared = {s.seq_id: self._common(s.kv_tokens, req.prompt_tokens) for s in self._slots}
        best = max((s for s in self._slots if s.free), key=lambda s: shared[s.seq_id])  # the first of equals
        best_n = shared[best.seq_id]
        donor = max(self._slots, key=lambda s: shared[s.seq_id])
        # Only what the request would reuse counts (at least one prompt token is always read).
        usable = min(shared[donor.seq_id], len(req.prompt_tokens) - 1)
        if donor is not best and usable - min(best_n, len(req.prompt_tokens) - 1) >= MIN_PREFIX_COPY:
            # The copy is queued and done at the start of the next decode, before that batch's tokens are stored:
            # it takes the donor's cache as it is now, which is what its kv_tokens say.
            self._ll.llama_memory_seq_cp(self._mem, donor.seq_id, best.seq_id, -1, -1)
            best.kv_tokens = list(donor.kv_tokens)
            best_n = shared[donor.seq_id]
            self.stats["prefix_copies"] += 1
        # At least one prompt token must be read, to have logits to sample the first token from.
        keep = min(best_n, len(req.prompt_tokens) - 1)
        if not self._ll.llama_memory_seq_rm(self._mem, best.seq_id, keep, -1):
            self._ll.llama_memory_seq_rm(self._mem, best.seq_id, -1, -1)
            keep = 0
        best.kv_tokens = best.kv_tokens[:keep]
        best.pending = list(req.prompt_tokens[keep:])
        best.next_token = None
        best.req = req
        p = req.params
        # Greedy with nothing to adjust the logits: an argmax gives the chain's token without building it
        best.greedy = p.temperature <= 0 and not p.logit_bias and (p.repeat_penalty, p.presence_penalty,
                                                                   p.frequency_penalty) == (1.0, 0.0, 0.0)
        best.sampler = None if best.greedy else self._new_sampler(p)
        if p.copy_ids:
            from airflow_net.serve.copy_ids import IdConstraint

            best.copy = IdConstraint(self.vocab_index(), p.copy_ids, ends=() if p.ignore_eos else self._eog_set)
        else:
            best.copy = None
        best.answer = ""
        best.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        best.held = ""
        req.cached_tokens = keep
        req.t_start = now
        self.stats["prompt_tokens_cached"] += keep

    def _compact(self) -> None:
        """Keep the running sequences on the lowest sequence ids, with no free slot between them.

        With one KV stream per slot, llama.cpp splits a batch into sub-batches of consecutive sequence ids
        (``split_equal``, sequential) and computes them one after the other: slots 0, 2, 4, 6 decode in four
        passes, 0-3 in one. So the highest running sequence moves into the lowest free slot: llama.cpp copies its
        whole KV stream over (at the start of the next decode; a copy, not a recomputation, so its answer is
        unchanged) and the slot keeps its request and its ``kv_tokens``. The free slot takes the stream the
        sequence left, which still holds it: its tokens become the free slot's cached prefix, so the next request
        there reads only what differs from it (the system prompt at least). Emptying that stream instead cost a
        served engine at 4 parallel 570 more prompt tokens in 16 requests (a new request arrives after the
        compaction over HTTP; in-process it is already queued), 6% of its throughput.
        """
        ll = self._ll
        slots = list(self._slots)
        moved = False
        while True:
            free = [s for s in slots if s.free]
            busy = [s for s in slots if not s.free]
            if not free or not busy or free[0].seq_id > busy[-1].seq_id:
                break
            low, high = free[0], busy[-1]
            # seq_cp across streams resets the destination stream and queues a copy of the whole source buffer
            # (done in order at the next decode); the source stream keeps its cells and data.
            ll.llama_memory_seq_rm(self._mem, low.seq_id, -1, -1)
            ll.llama_memory_seq_cp(self._mem, high.seq_id, low.seq_id, -1, -1)
            low.seq_id, high.seq_id = high.seq_id, low.seq_id
            low.kv_tokens = list(high.kv_tokens)  # the free slot's stream still holds the moved sequence
            slots.sort(key=lambda s: s.seq_id)
            self.stats["slot_moves"] += 1
            moved = True
        if moved:
            self._slots = slots  # one assignment: other threads (active, stop) never see a half-sorted list

    def _finish(self, slot: _Slot, reason: str, error: str | None = None) -> None:
        req = slot.req
        assert req is not None
        tail = slot.held + slot.decoder.decode(b"", final=True) if reason in ("length", "stop") else ""
        if slot.sampler is not None:
            self._ll.llama_sampler_free(slot.sampler)
        slot.sampler, slot.req, slot.pending, slot.next_token, slot.held = None, None, [], None, ""
        slot.copy, slot.answer = None, ""
        self._end(req, reason, tail, error)

    def _end(self, req: Request, reason: str, tail: str = "", error: str | None = None) -> None:
        req.t_end = time.perf_counter()
        req.finish_reason, req.error = reason, error
        self.stats[f"requests_{reason}"] += 1
        self.stats["completion_tokens"] += len(req.tokens)
        if self.on_finish is not None:
            try:
                self.on_finish(req)
            except Exception:  # a metrics hook must not break the loop
                log.exception("on_finish hook failed")
        req._emit(Delta(tail, [], finish_reason=reason, error=error))

    def _emit_text(self, slot: _Slot, token: int) -> bool:
        """Decode the token into text, apply stop strings, stream what is safe. True: a stop string matched."""
        req = slot.req
        assert req is not None
        text = slot.held + slot.decoder.decode(self.piece(token))
        stops = req.params.stop
        if stops:
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                if cut:
                    req._emit(Delta(text[:cut], [token]))
                slot.held = ""
                return True
            hold = 0
            for s in stops:  # the longest end of the text that could still grow into a stop string
                for k in range(min(len(s) - 1, len(text)), hold, -1):
                    if text.endswith(s[:k]):
                        hold = k
                        break
            slot.held = text[len(text) - hold:] if hold else ""
            text = text[: len(text) - hold]
        if text or not stops:
            req._emit(Delta(text, [token]))
        return False

    def step(self) -> bool:
        """One decode step over all slots. Returns whether any work is left (queued or running)."""
        ll = self._ll
        now = time.perf_counter()
        with self._lock:
            cancels, self._cancels = self._cancels, set()
            if cancels:
                kept = collections.deque(r for r in self._queue if r.id not in cancels)
                for r in self._queue:
                    if r.id in cancels:
                        self._end(r, "cancelled")
                self._queue = kept
            for s in self._slots:
                if s.req is not None and s.req.id in cancels:
                    self._finish(s, "cancelled")
            while self._queue and any(s.free for s in self._slots):
                self._admit(self._queue.popleft(), now)
        self._compact()

        batch = self._batch
        n = 0
        outputs: list[tuple[_Slot, int]] = []
        touched: dict[int, _Slot] = {}

        def put(slot: _Slot, token: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = len(slot.kv_tokens)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot.seq_id
            batch.logits[n] = logits
            slot.kv_tokens.append(token)
            touched[slot.seq_id] = slot
            if logits:
                outputs.append((slot, n))
            n += 1

        # Each generating slot puts its one token; one prompt reads its next chunk, the oldest request's first:
        # prompts are compute-bound, so reading several in one batch takes as long as one after the other, but
        # the first would wait for all. The tokens go in sequence-id order: llama.cpp groups a sub-batch only
        # from ids that increase by one in batch order, so a prompt in a middle slot joins the generating ones.
        generating = sum(s.req is not None and s.next_token is not None for s in self._slots)
        prefilling = [s for s in self._slots if s.req is not None and s.pending]
        reader = min(prefilling, key=lambda s: s.req.t_submit) if prefilling else None
        for s in self._slots:
            if s.req is not None and s.next_token is not None:
                put(s, s.next_token, True)
                s.next_token = None
            elif s is reader:
                take = min(len(s.pending), self.n_batch - generating)  # n_batch >= n_parallel: take >= 1
                chunk, s.pending = s.pending[:take], s.pending[take:]
                for j, t in enumerate(chunk):
                    put(s, t, not s.pending and j == take - 1)
                self.stats["prompt_tokens"] += take
        if n == 0:
            return self.busy()

        batch.n_tokens = n
        rc = ll.llama_decode(self._ctx.ctx, batch)
        self.stats["decode_calls"] += 1
        if rc != 0:
            # The whole batch failed (e.g. no room in the KV cache): end the requests in it rather than hang.
            msg = f"llama_decode returned {rc}"
            log.error("%s with %d tokens in the batch; ending the requests in it", msg, n)
            for s in touched.values():
                ll.llama_memory_seq_rm(self._mem, s.seq_id, -1, -1)
                s.kv_tokens = []
                self._finish(s, "error", msg)
            return self.busy()

        t = time.perf_counter()
        for s, i in outputs:
            req = s.req
            assert req is not None
            if s.greedy:
                # Plain greedy: the argmax of this row of logits, as llama.cpp's greedy sampler takes it (the first
                # maximum), without building its candidate list over the whole vocabulary for every token: at the
                # 152k vocabulary, 4 rows take 0.05 ms this way and 0.65 ms through the sampler chains.
                logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx.ctx, i), shape=(self.n_vocab,))
                if s.copy is None:
                    token = self._greedy(logits, req.params.ignore_eos)
                else:
                    token = s.copy.pick(s.answer, logits, self.piece_text)
            elif s.copy is not None:
                token = self._sample_copying(s, i)
            else:
                token = ll.llama_sampler_sample(s.sampler, self._ctx.ctx, i)  # samples and accepts
            if req.t_first is None:
                req.t_first = t
            if not req.params.ignore_eos and token in self._eog_set:
                self._finish(s, "stop")
                continue
            req.tokens.append(token)
            if s.copy is not None:
                s.answer += self.piece_text(token)
            self.stats["generated_tokens"] += 1
            if self._emit_text(s, token):
                self._finish(s, "stop")
            elif len(req.tokens) >= req.params.max_tokens or len(s.kv_tokens) + 1 >= self.n_ctx:
                self._finish(s, "length")
            else:
                s.next_token = token
        return self.busy()

    def _sample_copying(self, s: _Slot, i: int) -> int:
        """Sample from row ``i`` under the slot's id-copying constraint: the state's mask first, then a token
        that would still leave the requested ids is struck from the row and the chain samples again."""
        from airflow_net.serve.copy_ids import apply_rule

        ll = self._ll
        row = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx.ctx, i), shape=(self.n_vocab,))
        apply_rule(row, s.copy.allowed(s.answer))  # the chain reads the row after this
        token = ll.llama_sampler_sample(s.sampler, self._ctx.ctx, i)
        for _ in range(8):
            if not s.copy.rejects(s.answer, token, self.piece_text(token)):
                break
            row[token] = -np.inf
            token = ll.llama_sampler_sample(s.sampler, self._ctx.ctx, i)
        return token

    def piece_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="replace")

    def _greedy(self, logits: Any, ignore_eos: bool) -> int:
        """The greedy token of a row of logits: its first maximum, as llama.cpp's greedy sampler takes it; with
        ignore_eos, the first maximum of the other tokens, as the chain's -inf bias on the end tokens gives. The
        row is only copied and masked when an end token wins: otherwise the first maximum is not one of them."""
        token = int(logits.argmax())
        if ignore_eos and token in self._eog_set:
            masked = logits.copy()  # the row itself is llama.cpp's
            masked[self._eog] = -np.inf
            token = int(masked.argmax())
        return token

    def next_token_logits(self, tokens: Sequence[int]) -> Any:
        """The logits after ``tokens``, decoded as one sequence alone (a reference for tests and checks): the last
        row of :meth:`sequence_logits`. Uses the last slot's cache; only on an idle engine."""
        return self.sequence_logits(tokens, len(tokens) - 1)[0]

    def sequence_logits(self, tokens: Sequence[int], first: int) -> Any:
        """Teacher forcing: the logits at every position from ``first`` to the end of ``tokens``, read as one
        sequence alone; row i predicts ``tokens[first + i + 1]`` (the last row, what would follow).

        A (len(tokens) - first, n_vocab) float32 array. Only while nothing else runs (the engine's thread stopped,
        nothing queued): it uses the last slot's cache.
        """
        if self._thread is not None or self.busy():
            raise RuntimeError("sequence_logits() needs an idle engine")
        toks = list(tokens)
        if not 0 <= first < len(toks):
            raise ValueError(f"first must index into the {len(toks)} tokens (got {first})")
        if len(toks) > self.n_ctx:
            raise PromptTooLong(f"{len(toks)} tokens do not fit one slot's context of {self.n_ctx}")
        slot = self._slots[-1]
        self._ll.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.kv_tokens = []
        out = np.empty((len(toks) - first, self.n_vocab), dtype=np.float32)
        batch = self._batch
        for start in range(0, len(toks), self.n_batch):
            chunk = toks[start:start + self.n_batch]
            for j, t in enumerate(chunk):
                batch.token[j], batch.pos[j], batch.n_seq_id[j] = t, start + j, 1
                batch.seq_id[j][0] = slot.seq_id
                batch.logits[j] = start + j >= first
            batch.n_tokens = len(chunk)
            if self._ll.llama_decode(self._ctx.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            for j in range(max(0, first - start), len(chunk)):  # the logits of this batch are readable until the next
                row = self._ll.llama_get_logits_ith(self._ctx.ctx, j)
                out[start + j - first] = np.ctypeslib.as_array(row, shape=(self.n_vocab,))
        self._ll.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        return out

    # ---------------------------------------------------------------- running
    def generate_many(self, prompts: Sequence[str | Sequence[int]], params: SamplingParams | Sequence[SamplingParams],
                      *, progress: Callable[[int], Any] | None = None) -> list[Completion]:
        """Run a list of requests to completion in the calling thread, ``n_parallel`` at a time.

        All requests are queued before the first step, so the schedule (and with it every greedy answer) depends
        only on the inputs: the same call gives the same results on every run.
        """
        if self._thread is not None:
            raise RuntimeError("generate_many() needs the engine's own thread stopped (it is serving)")
        plist = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(plist)} sampling params")
        reqs = [self.submit(p, sp) for p, sp in zip(prompts, plist, strict=True)]
        done = 0
        while self.step():
            if progress is not None and (n := sum(r.done for r in reqs)) > done:
                progress(n - done)
                done = n
        if progress is not None and len(reqs) > done:
            progress(len(reqs) - done)
        return [r.result(timeout=0) for r in reqs]

    def start(self) -> None:
        """Run the engine on its own thread (for a server)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._stopping or self._queue or self._cancels or self.active)
                if self._stopping and not self._queue and not self.active:
                    return
            try:
                self.step()
            except Exception as exc:  # keep serving: end what was running, report it
                log.exception("engine step failed")
                for s in self._slots:
                    if s.req is not None:
                        self._ll.llama_memory_seq_rm(self._mem, s.seq_id, -1, -1)
                        s.kv_tokens = []
                        self._finish(s, "error", f"engine error: {exc}")

    def stop(self, *, drain: bool = False, timeout: float = 30.0) -> None:
        """Stop the engine's thread. drain: finish queued and running requests first; else cancel them."""
        with self._lock:
            self._stopping = True
            if not drain:
                for r in self._queue:
                    self._cancels.add(r.id)
                for s in self._slots:
                    if s.req is not None:
                        self._cancels.add(s.req.id)
                # a cancelled queue is emptied by the next step; admission stops because nothing is left
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("engine thread still busy after %.0f s", timeout)
            self._thread = None
        elif not drain:
            self.step()

    def close(self) -> None:
        """Free the context and the model (stops the thread first)."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        for s in self._slots:
            if s.sampler is not None:
                self._ll.llama_sampler_free(s.sampler)
                s.sampler = None
        if self._batch is not None:
            self._ll.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()
        self._model.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
