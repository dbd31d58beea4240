"""The typed schema of ``params.yaml``.

Every section is a pydantic model that forbids unknown keys, so a typo fails at load with one line
naming the key and what was expected. Stages load the whole file (to validate it) but read only their
own section(s); ``dvc.yaml`` lists exactly those keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

QUANT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "F16")


class ParamsError(ValueError):
    """A params file that does not match the schema; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusSourceParams(_Section):
    kind: Literal["synthetic", "dir", "jsonl", "hf"] = "synthetic"
    path: str | None = None  # folder, JSONL file or saved HF dataset (not used by "synthetic")
    name: str | None = None  # label in stats and the data card; default: the kind and the path's name
    field: str = "source"  # JSONL key / dataset column that holds the DAG's code
    # Share of the final corpus when sources are mixed (set on every source, or on none: then all of each).
    weight: float | None = Field(None, gt=0)
    license: str | None = None  # recorded as metadata on each DAG from this source (a row's own wins)
    near_dedupe: bool | None = None  # near-duplicate filter; default: on for real DAGs, off for synthetic

    @model_validator(mode="after")
    def _path_needed(self) -> CorpusSourceParams:
        if self.kind != "synthetic" and not self.path:
            raise ValueError(f"a '{self.kind}' source needs a path")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.kind if self.kind == "synthetic" else f"{self.kind}:{Path(self.path or '').name}"


class CorpusParams(_Section):
    sources: list[CorpusSourceParams] = Field(default_factory=lambda: [CorpusSourceParams()], min_length=1)
    n_dags: int = Field(600, ge=1)  # synthetic DAGs to generate (after de-duplication)
    airflow3_share: float = Field(0.7, ge=0, le=1)  # share of DAGs in the Airflow 3 (airflow.sdk) style
    max_tasks: int = Field(8, ge=1, le=64)
    max_dag_chars: int = Field(6000, ge=200)  # longer sources are dropped (they would not fit the context)
    min_dag_chars: int = Field(80, ge=0)  # shorter sources are dropped (stubs, empty files)
    # MinHash LSH over token 5-grams: DAGs whose estimated Jaccard similarity is at least this are
    # near-duplicates (the first one kept). Lower: stricter, removes more; 1.0: exact duplicates only.
    near_dup_threshold: float = Field(0.85, gt=0, le=1)
    max_dags: int | None = Field(None, ge=1)  # cap on the final corpus (after the shares of the weights)

    @model_validator(mode="after")
    def _sources_consistent(self) -> CorpusParams:
        labels = [s.label for s in self.sources]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"two sources share the label {dup[0]!r}: give them distinct `name`s")
        weighted = [s.weight is not None for s in self.sources]
        if any(weighted) and not all(weighted):
            raise ValueError("set a weight on every source (a mixture) or on none (all of each source)")
        return self


class AnthropicParams(_Section):
    """The Anthropic client's settings: instruct's own keys, and what the evaluate judge fills from its keys."""

    model: str = "claude-haiku-4-5"
    batch: bool = True  # Message Batches (half price, results within 24 h) instead of live calls
    max_cost_usd: float = Field(5.0, ge=0)  # refuse to submit when spent + worst-case estimate exceeds this
    max_tokens: int = Field(1024, ge=16)  # per request; also the worst case the budget guard assumes
    structured_output: bool = True  # JSON-schema output (output_config.format); off for models without it
    batch_size: int = Field(10_000, ge=1, le=100_000)  # requests per Message Batch (API limit: 100,000 / 256 MB)
    concurrency: int = Field(4, ge=1, le=64)  # live calls in flight when batch is false
    poll_seconds: float = Field(30.0, gt=0)  # between checks of a running batch
    max_retries: int = Field(2, ge=0, le=10)  # resubmissions per DAG of errored/expired/canceled/invalid answers
    api_max_retries: int = Field(2, ge=0, le=10)  # SDK-level retries of 429/529/5xx on each HTTP call
    price_input_per_mtok: float = Field(1.0, ge=0)  # USD per million input tokens, live price of `model`
    price_output_per_mtok: float = Field(5.0, ge=0)
    batch_discount: float = Field(0.5, gt=0, le=1)  # batch price = live price * this


class InstructParams(AnthropicParams):
    provider: Literal["offline", "anthropic"] = "offline"
    per_request: int = Field(3, ge=1, le=10)  # instructions written per DAG, all in one request
    canonical: bool = True  # also one canonical request per DAG (offline, free): the reformulator's output style


class DistillParams(_Section):
    enabled: bool = False  # optional stage: Magpie-style pairs from a local teacher GGUF
    teacher: str | None = None  # path to the teacher GGUF (e.g. a Qwen2.5-Coder-32B-Instruct Q4_K_M)
    n_pairs: int = Field(200, ge=1)  # validated pairs wanted
    max_attempts: int = Field(1000, ge=1)  # generations tried at most (each: one instruction + one answer)
    # The teacher's chat template up to where the user's text starts: Magpie's pre-query prefix.
    # Default: read from the GGUF's template (the part before a probe user message).
    pre_query: str | None = None
    system_prompt: str = Field(
        "You are an expert data engineer. You write complete Apache Airflow DAG files in Python.",
        min_length=1,
    )
    instruction_temperature: float = Field(1.0, ge=0, le=2)  # high: varied requests
    instruction_top_p: float = Field(0.99, gt=0, le=1)
    instruction_max_tokens: int = Field(256, ge=8)
    answer_temperature: float = Field(0.2, ge=0, le=2)  # low: careful code
    answer_top_p: float = Field(0.95, gt=0, le=1)
    answer_max_tokens: int = Field(2048, ge=16)
    n_ctx: int = Field(4096, ge=256)
    n_threads: int = Field(0, ge=0)  # 0: llama.cpp's default
    n_gpu_layers: int = Field(0)  # -1: offload every layer when llama.cpp has a GPU backend
    airflow_version: Literal[2, 3] | None = None  # judge answers against this version; None: the one each is written for

    @model_validator(mode="after")
    def _teacher_needed(self) -> DistillParams:
        if self.enabled and not self.teacher:
            raise ValueError("distill.enabled needs distill.teacher (a path to a GGUF file)")
        return self


class BaseParams(_Section):
    model: str = "tiny"  # "tiny" (built here) or a Hugging Face id / local path
    # The tiny model (ignored for a real model). Dimensions are multiples of 256 so Q4_K_M quantizes
    # every tensor as asked (k-quants need rows of 256).
    vocab_size: int = Field(4096, ge=512)
    hidden_size: int = Field(256, ge=64)
    intermediate_size: int = Field(768, ge=64)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(2, ge=1)
    max_position: int = Field(4096, ge=256)
    pretrain_steps: int = Field(300, ge=0)  # more: a stronger base, slower
    pretrain_batch_size: int = Field(8, ge=1)
    pretrain_seq_len: int = Field(512, ge=32)
    pretrain_lr: float = Field(3e-3, gt=0)
    # share of pre-training rows that are a train-split request and its DAG in the chat format (the instruct
    # stage's pairs), each row starting at a conversation: the model learns to copy from the request before
    # SFT; 0: DAG code only (the corpus)
    pretrain_requests: float = Field(0.0, ge=0, le=1)
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"  # loading a Hugging Face model
    num_threads: int = Field(0, ge=0)  # torch threads for pre-training; 0: torch's default

    @model_validator(mode="after")
    def _heads(self) -> BaseParams:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        return self


class PrepareParams(_Section):
    val_frac: float = Field(0.1, ge=0, lt=0.5)
    test_frac: float = Field(0.1, gt=0, lt=0.5)
    # share of train DAGs that also get a repair conversation (a planted defect, dagcheck's findings, the fix)
    repair_share: float = Field(0.0, ge=0, le=1)
    system_prompt: str = Field(
        "You are AirflowNet. Write one complete Apache Airflow DAG file in Python that does what the user asks."
        " Answer with the code only.",
        min_length=1,
    )


class TrainParams(_Section):
    max_seq_len: int = Field(1024, ge=64)  # longer: fewer truncated DAGs, more memory per step
    max_steps: int = Field(-1, ge=-1)  # -1: run num_epochs
    num_epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-3, gt=0)  # LoRA on a tiny model tolerates a high rate
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    packing: bool = True
    assistant_only_loss: bool = True
    eval_steps: int = Field(25, ge=1)
    # val conversations scored at each evaluation (the first N of the shuffled split); null: all of them
    max_eval_examples: int | None = Field(None, ge=1)
    logging_steps: int = Field(5, ge=1)
    use_unsloth: Literal["auto", "never", "always"] = "auto"  # auto: only when CUDA and unsloth are present
    num_threads: int = Field(0, ge=0)  # 0: torch's default


class LoraParams(_Section):
    r: int = Field(16, ge=1)  # higher: more capacity, more memory
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )


class ExportParams(_Section):
    outtype: Literal["f16", "bf16", "f32"] = "f16"
    keep_merged: bool = True  # also keep the merged fine-tuned model in HF format (models/gguf/finetuned-hf)


class QuantParams(_Section):
    type: str = "Q4_K_M"

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.upper() not in QUANT_TYPES:
            raise ValueError(f"unknown quantization '{v}', expected one of {', '.join(QUANT_TYPES)}")
        return v.upper()


class GenerateParams(_Section):
    max_examples: int = Field(60, ge=1)  # test instructions sent to each model
    max_tokens: int = Field(768, ge=16)
    temperature: float = Field(0.0, ge=0, le=2)  # 0: greedy, reproducible
    top_p: float = Field(1.0, gt=0, le=1)
    n_ctx: int = Field(2048, ge=256)
    n_threads: int = Field(0, ge=0)  # 0: all cores
    quantized: bool = True  # generate with the quantized GGUF (else the f16 one)
    parallel: int = Field(4, ge=1, le=64)  # requests decoded together (continuous batching); n_ctx is per request
    # the answer's dag/task/group ids are copied from the identifiers the request names (a decoding constraint)
    copy_ids: bool = True
    endpoint_copy_ids: bool = False  # ask the endpoint for copy_ids' rules ("copy_ids": true): airflow-net serve only
    autofix: bool = True  # dagcheck's exact fixes (dagcheck.fix.fix_source, in rounds) before an answer is judged
    # generation strategy (airflow_net.generate.strategies.STRATEGIES): what `airflow-net generate` uses by default
    strategy: Literal["direct", "best_of_n", "repair", "best_of_n_repair", "templated", "reformulated"] = "templated"
    # templated: what answers a request that does not render (not canonical, nor its reformulation)
    templated_fallback: Literal["direct", "best_of_n", "repair", "best_of_n_repair"] = "best_of_n"
    best_of_n: int = Field(4, ge=1, le=64)  # best_of_n: the greedy answer, then n-1 samples in one batch if needed
    sample_temperature: float = Field(0.3, gt=0, le=2)  # best_of_n's sampling temperature (candidates must differ)
    repair_rounds: int = Field(2, ge=0, le=10)  # follow-up turns with dagcheck's findings, at most
    # an OpenAI-compatible base URL (ending in /v1) to send requests to instead of the in-process engine
    endpoint: str | None = None
    endpoint_model: str = "default"  # the model name the endpoint serves
    api_key_env: str | None = None  # NAME of the env variable holding the endpoint's API key (the key is never stored)
    endpoint_concurrency: int = Field(8, ge=1, le=256)  # requests in flight at once


class EvaluateParams(_Section):
    airflow_version: Literal[2, 3] = 3
    bootstrap_resamples: int = Field(2000, ge=100)  # resamples per 95% interval / paired bootstrap
    bootstrap_seed: int = 0
    airflow_sample: int = Field(0, ge=0)  # generated DAGs per model loaded by real Airflow (needs .airflow-env)
    # LLM judge of instruction following (1-5 rubric, one-line reason): off, Claude through Message Batches, or
    # any OpenAI-compatible endpoint (airflow-net serve, llama-server, vLLM)
    judge: Literal["none", "anthropic", "openai"] = "none"
    judge_model: str = "claude-haiku-4-5"  # the Anthropic model, or the model name sent to the endpoint
    judge_max_cost_usd: float = Field(2.0, ge=0)  # anthropic: refuse to submit when spent + worst case exceeds it
    judge_max_tokens: int = Field(200, ge=16)  # per answer; also the worst case the cost guard assumes
    judge_price_input_per_mtok: float = Field(1.0, ge=0)  # anthropic: USD per million input tokens, live price
    judge_price_output_per_mtok: float = Field(5.0, ge=0)
    judge_poll_seconds: float = Field(30.0, gt=0)  # anthropic: between checks of a running batch
    judge_endpoint: str | None = None  # openai: the server's base URL, ending in /v1
    judge_api_key_env: str | None = None  # openai: the NAME of the environment variable holding its key
    judge_concurrency: int = Field(4, ge=1, le=64)  # openai: requests in flight
    judge_sample: int | None = Field(None, ge=1)  # requests judged per model (the same for both); None: all
    judge_cache: str = ".cache/judge"  # the ledger (anthropic) and answer cache (openai): reruns never pay twice

    @model_validator(mode="after")
    def _judge_endpoint_needed(self) -> EvaluateParams:
        if self.judge == "openai" and not self.judge_endpoint:
            raise ValueError("evaluate.judge 'openai' needs evaluate.judge_endpoint (e.g. http://127.0.0.1:8080/v1)")
        return self


BENCH_METHODS = ("transformers-fp32", "transformers-bf16", "llama-cpp", "processes", "llama-cpp-server",
                 "python-engine", "llama-server")


class BenchParams(_Section):
    # base | finetuned (the pipeline's quantized GGUFs) | shape:NAME (a real architecture with random weights,
    # built once into .cache/shapes: shape:qwen2.5-coder-0.5b, -1.5b, -3b) | a path to a .gguf
    model: str = "finetuned"
    quant: str = "Q4_K_M"  # shape:NAME models only: the quantization built
    hf_model: str | None = None  # a .gguf model's transformers-format copy (the baseline); else it is skipped
    methods: list[Literal[BENCH_METHODS]] = Field(default_factory=lambda: list(BENCH_METHODS), min_length=1)
    workers: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1)  # requests in flight
    # Every run (each method at each number of workers) sends these same requests, each a distinct prompt from the
    # test split: the work is identical across runs, and no method gains from a prompt it has already seen.
    requests: int = Field(8, ge=1)
    repeats: int = Field(1, ge=1)  # each run this many times, interleaved across methods; the median is reported
    max_tokens: int = Field(64, ge=2)  # generated per request, exactly (end-of-generation ignored)
    n_ctx: int = Field(1024, ge=64)  # context per sequence (slot)
    n_threads: int = Field(0, ge=0)  # 0: all cores; every method gets the same number
    bandwidth_mib: int = Field(512, ge=64)  # array size for the memory-bandwidth measurement (>> caches)
    timeout_s: float = Field(900.0, gt=0)  # per method and number of workers

    @field_validator("quant")
    @classmethod
    def _quant(cls, v: str) -> str:
        if v.upper() not in QUANT_TYPES:
            raise ValueError(f"unknown quantization '{v}', expected one of {', '.join(QUANT_TYPES)}")
        return v.upper()

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: list[int]) -> list[int]:
        if any(w < 1 or w > 64 for w in v) or len(set(v)) != len(v):
            raise ValueError(f"workers must be distinct numbers from 1 to 64 (got {v})")
        return sorted(v)


class RewriteDataParams(_Section):
    source: Literal["corpus", "jsonl", "hf"] = "corpus"  # corpus: made here from data/corpus specs
    path: str | None = None  # jsonl: a file (split by hash) or a folder of {train,val,test}.jsonl; hf: save_to_disk
    query_field: str = "query"
    rewrite_field: str = "rewrite"
    noisy_per_dag: int = Field(3, ge=0, le=20)  # person-style (noiser) sources per DAG
    described: list[Literal["terse", "detailed", "business"]] = Field(default_factory=lambda: ["terse"])
    max_query_chars: int = Field(600, ge=50)  # longer sources are dropped: encoder cost grows with length
    val_frac: float = Field(0.1, gt=0, lt=0.5)  # split by DAG (seeded hash), all pairs of a DAG in one split
    test_frac: float = Field(0.1, gt=0, lt=0.5)
    max_test: int | None = Field(200, ge=1)  # test pairs kept (one per DAG first); null: all

    @model_validator(mode="after")
    def _path_needed(self) -> RewriteDataParams:
        if self.source != "corpus" and not self.path:
            raise ValueError(f"rewrite.data.source '{self.source}' needs rewrite.data.path")
        return self


class RewriteModelParams(_Section):
    name: str = "tiny"  # tiny (built here) | a Hugging Face id or local path (google/flan-t5-small)
    vocab_size: int = Field(2000, ge=64)  # tiny only: SentencePiece unigram pieces
    d_model: int = Field(256, ge=16)
    d_ff: int = Field(512, ge=16)
    d_kv: int = Field(32, ge=8)
    num_layers: int = Field(3, ge=1)
    num_decoder_layers: int = Field(3, ge=1)
    num_heads: int = Field(8, ge=1)
    pretrain_steps: int = Field(150, ge=0)  # span-corruption steps on request text; 0: random base
    pretrain_batch_size: int = Field(32, ge=1)
    pretrain_lr: float = Field(1e-3, gt=0)
    noise_density: float = Field(0.15, gt=0, lt=1)  # share of tokens masked in span corruption
    num_threads: int = Field(0, ge=0)  # 0: all cores


class RewriteTrainParams(_Section):
    method: Literal["full", "lora"] = "full"  # lora: PEFT adapters, merged after training (large models)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    max_steps: int = Field(400, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    eval_steps: int = Field(100, ge=1)
    max_eval_examples: int = Field(64, ge=1)  # val pairs decoded for ROUGE-L at each evaluation
    max_source_len: int = Field(192, ge=8)  # tokens
    max_target_len: int = Field(96, ge=8)
    num_threads: int = Field(0, ge=0)


class RewriteEvaluateParams(_Section):
    max_examples: int | None = Field(None, ge=1)  # test pairs decoded per model; null: all
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    num_threads: int = Field(0, ge=0)


# The quantizations each runtime family supports (a runtime's name is "<family>-<quant>", e.g. gguf-q8_0).
# rewrite/runtimes registers one class per name; tests/test_rewrite_params.py checks the two agree.
REWRITE_QUANTS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "int8"),          # PyTorch; int8 = dynamic quantization of the Linear layers
    "onnx": ("fp32", "int8"),           # ONNX Runtime; int8 = onnxruntime's dynamic quantization
    "ct2": ("fp32", "int8"),            # CTranslate2
    "gguf": ("f16", "q8_0", "q4_0"),    # llama.cpp through llama-cpp-python's low-level encoder-decoder calls
}


def rewrite_runtime_names(runtimes: list[str], quant: dict[str, list[str]]) -> list[str]:
    """The runtime names that rewrite.runtimes x rewrite.quant select, in params order."""
    return [f"{fam}-{q}" for fam in runtimes for q in quant.get(fam, [])]


class RewriteExportParams(_Section):
    compare_examples: int | None = Field(60, ge=1)  # test pairs each runtime decodes to compare with torch-fp32
    max_new_tokens: int = Field(96, ge=1)  # greedy length cap in that comparison (canonical requests ~55 tokens)
    threads: int = Field(1, ge=0)  # 0: all cores


class RewriteBenchParams(_Section):
    threads: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)  # intra-op threads per runtime
    max_new_tokens: int = Field(24, ge=1)  # generated per query, exactly (EOS ignored): the figure
    queries: int = Field(20, ge=1)  # from the test split, one at a time
    rounds: int = Field(3, ge=1)  # interleaved across runtimes; medians and spreads reported
    warmup: int = Field(2, ge=0)

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: list[int]) -> list[int]:
        if any(t < 1 or t > 64 for t in v) or len(set(v)) != len(v):
            raise ValueError(f"threads must be distinct numbers from 1 to 64 (got {v})")
        return sorted(v)


class RewriteParams(_Section):
    """The reformulation model (issue 15): data, model, training and evaluation; its CPU runtimes and benchmark."""

    data: RewriteDataParams = Field(default_factory=RewriteDataParams)
    model: RewriteModelParams = Field(default_factory=RewriteModelParams)
    train: RewriteTrainParams = Field(default_factory=RewriteTrainParams)
    evaluate: RewriteEvaluateParams = Field(default_factory=RewriteEvaluateParams)
    # runtime families exported, compared with PyTorch fp32 and benchmarked; rewrite.quant: which
    # quantizations of each (names "<family>-<quant>"); a family absent from quant exports nothing
    runtimes: list[Literal["torch", "onnx", "ct2", "gguf"]] = Field(
        default_factory=lambda: ["torch", "onnx", "ct2", "gguf"], min_length=1)
    quant: dict[str, list[str]] = Field(default_factory=lambda: {"torch": ["fp32", "int8"], "onnx": ["fp32", "int8"],
                                                                 "ct2": ["fp32", "int8"],
                                                                 "gguf": ["f16", "q8_0", "q4_0"]})
    # mend and copy ids after decoding (rewrite/snap.py): every use of the reformulator; rewrite_evaluate
    # reports the fine-tuned model with and without it
    snap: bool = True
    # the n best beams, the first that parses (torch runtimes; others greedy): more parses, ~2-3x the time
    beams: int = Field(4, ge=1, le=16)
    # the runtime the pipeline reformulates with (templated and reformulated strategies, rewrite_evaluate's
    # finetuned_served, generate --rewrite): one of the exported runtime names
    runtime: str = "ct2-int8"
    export: RewriteExportParams = Field(default_factory=RewriteExportParams)
    bench: RewriteBenchParams = Field(default_factory=RewriteBenchParams)

    @model_validator(mode="after")
    def _runtime_names(self) -> RewriteParams:
        if len(set(self.runtimes)) != len(self.runtimes):
            raise ValueError(f"rewrite.runtimes lists a family twice: {self.runtimes}")
        for fam, qs in self.quant.items():
            if fam not in REWRITE_QUANTS:
                raise ValueError(f"rewrite.quant.{fam}: unknown runtime family, expected one of {sorted(REWRITE_QUANTS)}")
            bad = [q for q in qs if q not in REWRITE_QUANTS[fam]]
            if bad or len(set(qs)) != len(qs):
                raise ValueError(f"rewrite.quant.{fam}: {qs} - expected distinct values from {list(REWRITE_QUANTS[fam])}")
        if "torch" not in self.runtimes or "fp32" not in self.quant.get("torch", []):
            raise ValueError("rewrite.runtimes/quant must include torch fp32: every runtime is compared with it")
        if not rewrite_runtime_names(self.runtimes, self.quant):
            raise ValueError("rewrite.runtimes x rewrite.quant selects no runtime")
        if self.runtime not in rewrite_runtime_names(self.runtimes, self.quant):
            raise ValueError(f"rewrite.runtime {self.runtime!r} is not exported: expected one of "
                             f"{rewrite_runtime_names(self.runtimes, self.quant)} (rewrite.runtimes x rewrite.quant)")
        return self

    @property
    def runtime_names(self) -> list[str]:
        return rewrite_runtime_names(self.runtimes, self.quant)


class StrategiesParams(_Section):
    """The generation strategies side by side (issue 16): dvc.yaml's `strategies` foreach stage."""

    # reformulated: the rewrite model first, then direct (what the reformulator buys the DAG model)
    names: list[Literal["direct", "best_of_n", "repair", "best_of_n_repair", "templated", "reformulated"]] = Field(
        default_factory=lambda: ["direct", "best_of_n", "repair", "templated", "reformulated"], min_length=1)
    sample: int = Field(20, ge=1)  # test DAGs: one describer-written and one person-style request each
    # a strategy cheap enough to run on more test DAGs (templated): its own number; the first `sample` of them are
    # the shared requests of the side-by-side table, the rest give a tighter interval (metrics' "wider")
    sample_overrides: dict[str, int] = Field(default_factory=dict)
    rewrite_model: bool = True  # templated: reformulate with models/rewrite/finetuned what is not canonical
    bootstrap_resamples: int = Field(1000, ge=100)

    @model_validator(mode="after")
    def _overrides(self) -> StrategiesParams:
        known = ("direct", "best_of_n", "repair", "best_of_n_repair", "templated", "reformulated")
        for name, n in self.sample_overrides.items():
            if name not in known:
                raise ValueError(f"strategies.sample_overrides: unknown strategy {name!r}, expected one of {known}")
            if n < self.sample:
                raise ValueError(f"strategies.sample_overrides.{name}: {n} test DAGs, expected at least "
                                 f"strategies.sample ({self.sample}): the shared requests come first")
        return self


class QuantSweepParams(_Section):
    """Quantization chosen by measured quality (issue 17): dvc.yaml's `quant_sweep` foreach stage, one item per type."""

    types: list[str] = Field(default_factory=lambda: ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"], min_length=1)
    sample: int = Field(4, ge=1)  # test requests per type (seeded, one per DAG), the same for every type
    seed: int = 0  # which test requests; also the engine's seed
    max_kl: float = Field(0.01, gt=0)  # mean KL (nats) against F16 a type may have and still be picked
    bootstrap_resamples: int = Field(1000, ge=100)  # per 95% interval (seeded with `seed`)

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        up = [t.upper() for t in v]
        unknown = [t for t in up if t not in QUANT_TYPES]
        if unknown:
            raise ValueError(f"unknown quantization {unknown[0]!r}, expected any of {', '.join(QUANT_TYPES)}")
        if len(set(up)) != len(up):
            raise ValueError(f"types must be distinct (got {v})")
        return up


class Params(_Section):
    seed: int = 42
    corpus: CorpusParams = Field(default_factory=CorpusParams)
    instruct: InstructParams = Field(default_factory=InstructParams)
    distill: DistillParams = Field(default_factory=DistillParams)
    base: BaseParams = Field(default_factory=BaseParams)
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    train: TrainParams = Field(default_factory=TrainParams)
    lora: LoraParams = Field(default_factory=LoraParams)
    export: ExportParams = Field(default_factory=ExportParams)
    quant: QuantParams = Field(default_factory=QuantParams)
    generate: GenerateParams = Field(default_factory=GenerateParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    bench: BenchParams = Field(default_factory=BenchParams)
    rewrite: RewriteParams = Field(default_factory=RewriteParams)
    strategies: StrategiesParams = Field(default_factory=StrategiesParams)
    quant_sweep: QuantSweepParams = Field(default_factory=QuantSweepParams)


def _format_error(path: Path, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        parent = ".".join(str(p) for p in e["loc"][:-1])
        section = _section_model(parent)
        allowed = ", ".join(section.model_fields) if section else ""
        msg = f"unknown key; allowed here: {allowed}" if allowed else "unknown key"
    elif "input" in e and e["type"] not in ("missing",):
        msg = f"{msg} (got {e['input']!r})"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {loc or '<top>'}: {msg}{more}"


def _section_model(dotted: str) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    if not dotted:
        return model
    for part in dotted.split("."):
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        cand = ann if isinstance(ann, type) else (args[0] if args else None)
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            model = cand
        else:
            return None
    return model


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate a params file; raises ParamsError with one line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (expected a YAML file with the sections of params.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_error(path, err)) from None
