"""The continuous-batching engine on a tiny Qwen2 GGUF: batching gives the single-sequence answers, requests
beyond the slots queue, cancelling frees a slot, and the per-request sampling and stop rules hold."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from airflow_net.params import BaseParams
from airflow_net.serve.engine import Engine, PromptTooLong, SamplingParams
from airflow_net.utils import atomic_path

ROOT = Path(__file__).resolve().parents[1]
# The tiny model as the pipeline builds it (airflow_net.models.base), smaller and briefly pre-trained on factory
# DAGs (~25 s once; pytest's cache keeps it): its logits are peaked like a trained model's, unlike random weights.
TINY = BaseParams(vocab_size=1024, hidden_size=256, intermediate_size=512, num_layers=2, num_heads=4, num_kv_heads=2,
                  max_position=2048, pretrain_steps=60, pretrain_batch_size=8, pretrain_seq_len=128, pretrain_lr=0.01)
SYSTEM = "You are AirflowNet. Write one complete Apache Airflow DAG file in Python."


def tiny_gguf(cache_dir: Path, quant: str) -> Path:
    """The trained tiny model as a GGUF (F16, or quantized from it), built once into ``cache_dir``."""
    import torch

    from airflow_net.bench.shapes import tokenizer_texts
    from airflow_net.export.gguf import convert_to_gguf, quantize_gguf
    from airflow_net.models.base import make_tiny_base, save_base

    llama_dir = ROOT / "third_party" / "llama.cpp"
    if not (llama_dir / "convert_hf_to_gguf.py").is_file():
        pytest.fail("llama.cpp's converter is missing: run `make install` (it extracts it into third_party/)")
    hf, f16, out = cache_dir / "hf", cache_dir / "model-F16.gguf", cache_dir / f"model-{quant}.gguf"
    if not (hf / "config.json").is_file():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            tb = make_tiny_base(tokenizer_texts(120), TINY, seed=0)
        finally:
            torch.set_num_threads(threads)
        with atomic_path(hf) as tmp:
            save_base(tb.model, tb.tokenizer, tmp, ours=True)
    if not f16.is_file():
        with atomic_path(f16) as tmp:
            convert_to_gguf(hf, tmp, outtype="f16", llama_dir=llama_dir)
    if not out.is_file():
        with atomic_path(out) as tmp:
            quantize_gguf(f16, tmp, quant)
    return out


@pytest.fixture(scope="session")
def tiny_dir(request: pytest.FixtureRequest) -> Path:
    key = hashlib.sha256(repr(TINY.model_dump()).encode()).hexdigest()[:10]  # a new model when its params change
    return Path(request.config.cache.mkdir(f"airflow-net-tiny-trained-{key}"))


@pytest.fixture(scope="module")
def engine(tiny_dir: Path):
    with Engine(tiny_gguf(tiny_dir, "F16"), n_parallel=4, n_ctx=512, n_threads=2) as e:
        yield e


def prompts(engine: Engine, n: int) -> list[str]:
    return [engine.render_chat([{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": f"a DAG number {i} that loads {7 * i} files from S3"}])
            for i in range(n)]


def first_difference_is_a_near_tie(engine: Engine, prompt: str, alone: list[int], together: list[int]) -> bool:
    """The documented tolerance for batched numerics: where a batched greedy answer first differs from the
    one-at-a-time answer, both tokens' logits (decoded alone, from scratch) are within 10% of the logits' standard
    deviation of the best one. Greedy decoding flips between near-equal tokens when the summation order changes."""
    k = next(i for i, (x, y) in enumerate(zip(alone, together, strict=False)) if x != y)
    logits = engine.next_token_logits(engine.tokenize(prompt) + alone[:k])
    best, tol = float(logits.max()), 0.1 * float(logits.std())
    return best - logits[alone[k]] <= tol and best - logits[together[k]] <= tol


@pytest.mark.parametrize("quant", ["F16", "Q8_0", "Q4_K_M"])
def test_concurrent_requests_return_the_one_at_a_time_answers(tiny_dir: Path, quant: str) -> None:
    """N requests in one batch give what each gives alone, exactly for F16. Quantized kernels (Q4_K's repacked
    ones, Q8_0 with CPU flash attention) sum in a different order for a batch than for one row, so a greedy path
    may flip where two tokens are nearly tied: allowed, within the documented tolerance."""
    with Engine(tiny_gguf(tiny_dir, quant), n_parallel=4, n_ctx=512, n_threads=2) as e:
        ps = prompts(e, 8)  # more requests than the 4 slots: the last four wait and are admitted as slots free up
        sp = SamplingParams(max_tokens=48, ignore_eos=True)
        alone = [e.generate_many([p], sp)[0] for p in ps]
        together = e.generate_many(ps, sp)
        assert all(c.completion_tokens == 48 and c.finish_reason == "length" for c in together)
        # the requests admitted later found the shared system prompt in their slot's cache
        assert all(c.cached_tokens > 0 for c in together[4:])
        same = [a.tokens == b.tokens for a, b in zip(alone, together, strict=True)]
        if quant == "F16":
            assert all(same)
            assert [c.text for c in together] == [c.text for c in alone]
        for p, a, b, eq in zip(ps, alone, together, same, strict=True):
            assert eq or first_difference_is_a_near_tie(e, p, a.tokens, b.tokens)


def kv_matches_bookkeeping(engine: Engine) -> bool:
    """Every slot's ``kv_tokens`` is as long as what llama.cpp holds for its sequence id (positions 0..n-1)."""
    ll = engine._ll
    return all(ll.llama_memory_seq_pos_max(engine._mem, s.seq_id) == len(s.kv_tokens) - 1 for s in engine._slots)


def test_a_sequence_moved_to_close_a_gap_continues_exactly(engine: Engine) -> None:
    """When a slot in the middle frees up, the highest running sequence moves down into it (its KV stream is
    copied), so llama.cpp decodes the running sequences in one pass; the moved answer is unchanged, and the
    slots' prefix caches stay true, so a second round reuses them and still gives the same answers."""
    ps = prompts(engine, 4)
    lengths = [40, 5, 40, 40]  # the second ends first: slot 1 frees while slots 0, 2, 3 run on
    params = [SamplingParams(max_tokens=n, ignore_eos=True) for n in lengths]
    alone = [engine.generate_many([p], sp)[0].tokens for p, sp in zip(ps, params, strict=True)]
    moves = engine.stats["slot_moves"]
    reqs = [engine.submit(p, sp) for p, sp in zip(ps, params, strict=True)]
    where: dict[int, set[int]] = {r.id: set() for r in reqs}  # the sequence ids each request ran on
    while engine.step():
        assert kv_matches_bookkeeping(engine)
        for s in engine._slots:
            if s.req is not None:
                where[s.req.id].add(s.seq_id)
    assert engine.stats["slot_moves"] > moves
    assert where[reqs[3].id] == {3, 1}  # the last request moved from slot 3 into the gap at slot 1
    assert [r.result(timeout=0).tokens for r in reqs] == alone
    # The free slot that took the stream the sequence left keeps it as its cached prefix (the prompt and what
    # was generated up to the move), and that cache is sound: one more token decoded on it gives the logits
    # of the same tokens computed from scratch.
    ll = engine._ll
    kept = next(s for s in engine._slots if s.seq_id == 3)
    n_gen = len(kept.kv_tokens) - len(engine.tokenize(ps[3]))
    assert n_gen > 0 and kept.kv_tokens == engine.tokenize(ps[3]) + reqs[3].result(timeout=0).tokens[:n_gen]
    probe = 42
    b = engine._batch
    b.token[0], b.pos[0], b.n_seq_id[0], b.seq_id[0][0], b.logits[0] = probe, len(kept.kv_tokens), 1, 3, True
    b.n_tokens = 1
    assert ll.llama_decode(engine._ctx.ctx, b) == 0
    cached = np.ctypeslib.as_array(ll.llama_get_logits_ith(engine._ctx.ctx, 0), shape=(engine.n_vocab,)).copy()
    kept.kv_tokens.append(probe)
    fresh = engine.next_token_logits(kept.kv_tokens)  # reads them all again, on the last slot (this one)
    kept.kv_tokens = []
    assert int(cached.argmax()) == int(fresh.argmax()) and np.allclose(cached, fresh, atol=1e-2)
    again = engine.generate_many(ps, params)
    assert kv_matches_bookkeeping(engine)
    assert sum(c.cached_tokens for c in again) > 0
    assert [c.tokens for c in again] == alone


def test_a_new_request_copies_a_longer_cached_prefix_from_a_running_slot(tiny_dir: Path) -> None:
    """A request admitted to a slot with an empty cache, while another slot runs a request with the same system
    prompt, takes that slot's cached prefix (its KV stream copied) instead of reading the prefix again; both
    answers are what they are alone."""
    from airflow_net.serve.engine import MIN_PREFIX_COPY

    with Engine(tiny_gguf(tiny_dir, "F16"), n_parallel=2, n_ctx=512, n_threads=2) as e:
        pa, pb = prompts(e, 2)
        shared = Engine._common(e.tokenize(pa), e.tokenize(pb))
        assert shared >= MIN_PREFIX_COPY  # else this test would test nothing
        sp = SamplingParams(max_tokens=24, ignore_eos=True)
        alone = [e.generate_many([p], sp)[0].tokens for p in (pa, pb)]
        for s in e._slots:  # forget those runs: both slots start empty
            e._ll.llama_memory_seq_rm(e._mem, s.seq_id, -1, -1)
            s.kv_tokens = []
        a = e.submit(pa, sp)
        for _ in range(3):
            e.step()  # a reads its prompt and generates, in slot 0
        b = e.submit(pb, sp)
        while e.step():
            assert kv_matches_bookkeeping(e)
        assert e.stats["prefix_copies"] == 1
        assert b.result(timeout=0).cached_tokens == shared  # the system prompt and what else the two share
        assert a.result(timeout=0).tokens == alone[0]
        got = b.result(timeout=0).tokens
        assert got == alone[1] or first_difference_is_a_near_tie(e, pb, alone[1], got)


def test_the_greedy_shortcut_gives_the_sampler_chains_tokens(engine: Engine) -> None:
    """Plain greedy requests take the argmax of their logits; a zero logit bias makes the engine build llama.cpp's
    sampler chain (logit bias + greedy) instead: both give the same tokens, with and without ignore_eos."""
    p, q = prompts(engine, 2)
    for ignore_eos in (True, False):
        fast = SamplingParams(max_tokens=32, ignore_eos=ignore_eos)
        chain = SamplingParams(max_tokens=32, ignore_eos=ignore_eos, logit_bias=((0, 0.0),))
        reqs = [engine.submit(x, sp) for x, sp in ((p, fast), (q, fast), (p, chain), (q, chain))]
        engine.step()
        kinds = {s.req.id: (s.greedy, s.sampler is not None) for s in engine._slots if s.req is not None}
        assert [kinds[r.id] for r in reqs] == [(True, False)] * 2 + [(False, True)] * 2
        while engine.step():
            pass
        a, b, c, d = (r.result(timeout=0) for r in reqs)
        assert (a.tokens, a.finish_reason) == (c.tokens, c.finish_reason)
        assert (b.tokens, b.finish_reason) == (d.tokens, d.finish_reason)
        assert len(a.tokens) > 0
    # Where an end token is the row's maximum (rare on this model, so on made-up rows): ignore_eos takes the
    # first maximum of the others, as the chain's -inf bias does; the row itself is left as it was.
    end, other = engine._eog[0], 5 if engine._eog[0] != 5 else 6
    row = np.zeros(engine.n_vocab, dtype=np.float32)
    row[end], row[other], row[other + 1] = 3.0, 2.0, 2.0
    assert engine._greedy(row, False) == end and engine._greedy(row, True) == other and row[end] == 3.0
    row[end] = 2.0  # a tie with an end token placed first
    assert engine._greedy(row, False) == min(end, other) and engine._greedy(row, True) == other


def test_requests_beyond_the_slots_wait_for_a_free_one(tiny_dir: Path) -> None:
    with Engine(tiny_gguf(tiny_dir, "Q8_0"), n_parallel=2, n_ctx=256, n_threads=2) as e:
        out = e.generate_many(prompts(e, 5), SamplingParams(max_tokens=8, ignore_eos=True))
        assert len(out) == 5 and all(c.completion_tokens == 8 for c in out)
        assert out[0].queued_s < out[2].queued_s and out[1].queued_s < out[2].queued_s
        # the third starts only when one of the first two is done
        assert out[2].queued_s >= min(out[0].seconds, out[1].seconds) - 1e-3


def test_a_cancelled_request_frees_its_slot_for_the_next(tiny_dir: Path) -> None:
    with Engine(tiny_gguf(tiny_dir, "Q8_0"), n_parallel=1, n_ctx=2048, n_threads=2) as e:
        e.start()
        first_delta = threading.Event()
        long = e.submit(prompts(e, 1)[0], SamplingParams(max_tokens=100_000, ignore_eos=True),
                        on_delta=lambda d: first_delta.set())
        queued = e.submit(prompts(e, 2)[1], SamplingParams(max_tokens=4, ignore_eos=True))
        assert first_delta.wait(30)
        time.sleep(0.05)
        assert not queued.done and queued.t_start is None  # one slot: it waits
        t_cancel = time.perf_counter()
        long.cancel()
        res = queued.result(timeout=30)
        assert long.result(timeout=5).finish_reason == "cancelled"
        assert res.completion_tokens == 4
        assert queued.t_start is not None and queued.t_start - t_cancel < 1.0  # admitted at the next step
        assert long.result().completion_tokens < 2000  # it did not run to the end of its context
        e.stop()


def test_stop_strings_cut_the_text_and_are_never_streamed(engine: Engine) -> None:
    p = prompts(engine, 1)[0]
    full = engine.generate_many([p], SamplingParams(max_tokens=40, ignore_eos=True))[0]
    assert len(full.text) > 20
    stop = full.text[10:14]
    cut = full.text.index(stop)
    req = engine.submit(p, SamplingParams(max_tokens=40, ignore_eos=True, stop=("zzzz-not-there", stop)))
    while engine.step():
        pass
    deltas = list(req.deltas(timeout=1))
    res = req.result(timeout=0)
    assert res.finish_reason == "stop"
    assert res.text == full.text[:cut]
    assert "".join(d.text for d in deltas) == res.text
    assert all(stop not in d.text for d in deltas)


def test_max_tokens_eos_and_context_limits(engine: Engine) -> None:
    p = prompts(engine, 1)[0]
    n = len(engine.tokenize(p))
    r = engine.generate_many([p], SamplingParams(max_tokens=7, ignore_eos=True))[0]
    assert (r.completion_tokens, r.finish_reason, r.prompt_tokens) == (7, "length", n)
    # no more than the slot's context: prompt + completion == n_ctx at most
    r = engine.generate_many([p], SamplingParams(max_tokens=10_000, ignore_eos=True))[0]
    assert r.finish_reason == "length" and r.prompt_tokens + r.completion_tokens == engine.n_ctx
    # the end-of-generation token ends a request unless ignore_eos; it is not part of the text
    eog = sorted(engine._eog)[0]
    r = engine.generate_many([p], SamplingParams(max_tokens=20, logit_bias=((eog, 100.0),)))[0]
    assert (r.finish_reason, r.completion_tokens, r.text) == ("stop", 0, "")
    with pytest.raises(PromptTooLong, match=r"prompt has \d+ tokens but a slot's context holds 512"):
        engine.submit(p * 40, SamplingParams())


def test_sampling_is_per_request_and_seeded(engine: Engine) -> None:
    p = prompts(engine, 1)[0]
    hot = [SamplingParams(max_tokens=24, temperature=1.0, seed=s, ignore_eos=True) for s in (1, 1, 2)]
    greedy = SamplingParams(max_tokens=24, ignore_eos=True)
    a, b, c, g = engine.generate_many([p] * 4, [*hot, greedy])
    assert a.tokens == b.tokens  # same seed, same draw, even side by side in one batch
    assert a.tokens != c.tokens
    assert g.tokens == engine.generate_many([p], greedy)[0].tokens


def test_invalid_sampling_params_are_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)


def test_next_token_logits_matches_greedy(engine: Engine) -> None:
    p = prompts(engine, 1)[0]
    r = engine.generate_many([p], SamplingParams(max_tokens=1))[0]
    logits = engine.next_token_logits(engine.tokenize(p))
    assert logits.shape == (engine.n_vocab,) and int(np.argmax(logits)) == r.tokens[0]
