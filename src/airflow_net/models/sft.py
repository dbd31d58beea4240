"""LoRA supervised fine-tuning with TRL's SFTTrainer and PEFT; Unsloth on a CUDA GPU when it is installed.

The rows are chat conversations ([system, user, assistant]); with ``assistant_only_loss`` only the
assistant's tokens (the DAG code and the ``<|im_end|>`` that ends the turn) carry loss. TRL finds the
training variant of the chat template (the same template with ``{% generation %}`` markers) because the
tokenizer's template is exactly TRL's Qwen2.5 one; a Hugging Face base model whose template TRL does not
know needs ``train.assistant_only_loss: false`` or a template with those markers.

Multi-GPU: the trainer is plain TRL/Accelerate, so ``accelerate launch stages/train.py ...`` runs it on
several processes unchanged; only the main process writes outputs (see ``SftResult.is_main``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_net.models.tokenizer import is_ours, mark_tokenizer
from airflow_net.params import LoraParams, TrainParams
from airflow_net.utils import UserError, read_jsonl

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


def load_sft_rows(path: str | Path) -> list[dict[str, Any]]:
    """Conversations from a data/sft JSONL file, reduced to their "messages" (metadata keys dropped)."""
    path = Path(path)
    rows = []
    for i, row in enumerate(read_jsonl(path), 1):
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise UserError(f"{path}:{i}: expected a non-empty 'messages' list (rerun the prepare stage)")
        clean = []
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise UserError(f"{path}:{i}: each message needs a role in {ROLES} and a string content, got {m!r:.80}")
            msg = {"role": m["role"], "content": m["content"]}
            if "weight" in m:  # OpenAI's fine-tuning convention: an assistant turn with weight 0 is context only
                if m["role"] != "assistant" or m["weight"] not in (0, 1):
                    raise UserError(f"{path}:{i}: 'weight' is 0 or 1 on an assistant message, got {m!r:.80}")
                msg["weight"] = int(m["weight"])
            clean.append(msg)
        if clean[-1]["role"] != "assistant" or clean[-1].get("weight", 1) == 0:
            raise UserError(f"{path}:{i}: the last message must be the assistant's answer (the DAG), trained on")
        rows.append({"messages": clean})
    return rows


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_unsloth(mode: str) -> bool:
    """Whether to train with Unsloth: "never", "always" (fails clearly without it) or "auto"."""
    if mode == "never":
        return False
    have = importlib.util.find_spec("unsloth") is not None
    if mode == "always":
        if not have:
            raise UserError("train.use_unsloth is 'always' but unsloth is not installed: pip install -r requirements-gpu.txt")
        if not cuda_available():
            raise UserError("train.use_unsloth is 'always' but no CUDA GPU is visible; use 'auto' or 'never' on CPU")
        return True
    return have and cuda_available()


def lora_config(lora: LoraParams):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_for_training(base_dir: str | Path, *, lora: LoraParams, max_seq_len: int, seed: int, use_unsloth: bool):
    """(model, tokenizer, peft_config): plain transformers + a LoraConfig for SFTTrainer, or an Unsloth
    model that already carries its LoRA adapters (peft_config None)."""
    base_dir = Path(base_dir)
    if not (base_dir / "config.json").is_file():
        raise UserError(f"{base_dir}: no HF model here (config.json missing); run `dvc repro base` first")
    if use_unsloth:
        # Unsloth patches transformers/TRL when imported; it must come before the first model is built.
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(base_dir), max_seq_length=max_seq_len, dtype=None, load_in_4bit=False
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=seed,
        )
        return model, tokenizer, None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    dtype = torch.bfloat16 if cuda_available() and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    return model, tokenizer, lora_config(lora)


def sft_config(train: TrainParams, *, output_dir: str | Path, seed: int, has_eval: bool, varlen_attention: bool = False):
    """TRL's SFTConfig from the train params. ``varlen_attention``: the model runs a flash-attention kernel.

    TRL packs padding-free: a batch becomes one long row with the documents kept apart by position ids.
    Flash attention handles that row per document; other kernels (SDPA on CPU) attend over the whole
    row with a block-diagonal mask, quadratic in batch_size * max_seq_len (4x slower measured at batch 8,
    1024 tokens). Without flash attention, packed rows therefore go one per micro-batch with gradient
    accumulation: the same rows per optimizer step, the same loss (normalised over all tokens of the step).
    """
    from trl import SFTConfig

    gpu = cuda_available()
    one_row = train.packing and not varlen_attention
    # Small models: recomputing activations costs more than it saves. transformers renamed the option
    # (gradient_ -> activation_checkpointing); the GPU stack pins an older transformers.
    ckpt = "activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__ else "gradient_checkpointing"
    return SFTConfig(
        output_dir=str(output_dir),
        max_length=train.max_seq_len,
        packing=train.packing,
        assistant_only_loss=train.assistant_only_loss,
        per_device_train_batch_size=1 if one_row else train.batch_size,
        per_device_eval_batch_size=1 if one_row else train.batch_size,
        gradient_accumulation_steps=train.grad_accum * (train.batch_size if one_row else 1),
        learning_rate=train.lr,
        lr_scheduler_type="cosine",
        warmup_steps=train.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=train.weight_decay,
        num_train_epochs=train.num_epochs,
        max_steps=train.max_steps,
        logging_steps=train.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=train.eval_steps,
        eval_on_start=has_eval,  # the loss before any training: the first point of the eval curve
        save_strategy="no",  # the stage saves the adapter itself, once
        report_to="none",  # MLflow gets the curves through our callback (a side channel that can be off)
        seed=seed,
        data_seed=seed,
        use_cpu=not gpu,
        bf16=gpu and _bf16_ok(),  # TRL defaults to bf16, which fails on CPU
        **{ckpt: False},
        dataloader_num_workers=0,
    )


def _bf16_ok() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


def _callback_class():
    from transformers import TrainerCallback

    class LossHistory(TrainerCallback):
        """Step-wise train and eval loss from the trainer's logs, forwarded to ``on_metrics``."""

        def __init__(self, on_metrics: Callable[[dict[str, float], int], None] | None = None):
            self.rows: dict[int, dict[str, float]] = {}
            self.on_metrics = on_metrics
            self.num_tokens = 0.0
            self.eval_seconds = 0.0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero:
                return
            step = int(state.global_step)
            picked = {}
            if "loss" in logs:
                picked["train_loss"] = float(logs["loss"])
            if "eval_loss" in logs:
                picked["eval_loss"] = float(logs["eval_loss"])
            if "eval_runtime" in logs:
                self.eval_seconds += float(logs["eval_runtime"])
            if "num_tokens" in logs:
                self.num_tokens = max(self.num_tokens, float(logs["num_tokens"]))
            if "learning_rate" in logs:
                picked["learning_rate"] = float(logs["learning_rate"])
            if not picked:
                return
            self.rows.setdefault(step, {}).update(picked)
            if self.on_metrics is not None:
                self.on_metrics(picked, step)

    return LossHistory


@dataclass
class SftResult:
    history: list[dict[str, Any]] = field(default_factory=list)  # {"step", "train_loss", "eval_loss"}; None if absent
    steps: int = 0
    seconds: float = 0.0  # wall time of trainer.train(), evaluations included
    eval_seconds: float = 0.0
    train_tokens: float = 0.0  # tokens the model saw in training (packed rows, padding-free: no padding)
    trainable_params: int = 0
    total_params: int = 0
    train_examples: int = 0
    val_examples: int = 0
    unsloth: bool = False
    is_main: bool = True  # False on the other processes under `accelerate launch`

    def _series(self, key: str) -> list[float]:
        return [r[key] for r in self.history if r.get(key) is not None]

    @property
    def tokens_per_s(self) -> float:
        """Training throughput: tokens over the time spent training (evaluations excluded)."""
        busy = self.seconds - self.eval_seconds
        return self.train_tokens / busy if busy > 0 else 0.0

    def metrics(self) -> dict[str, Any]:
        train, ev = self._series("train_loss"), self._series("eval_loss")
        return {
            "train_loss_first": train[0] if train else None,
            "train_loss_last": train[-1] if train else None,
            "eval_loss_first": ev[0] if ev else None,  # before training (eval_on_start)
            "eval_loss_last": ev[-1] if ev else None,
            "steps": self.steps,
            "train_examples": self.train_examples,
            "val_examples": self.val_examples,
            "train_tokens": int(self.train_tokens),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "seconds": round(self.seconds, 2),
            "eval_seconds": round(self.eval_seconds, 2),
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "unsloth": self.unsloth,
        }


# The assistant branch of a training template, for a turn with weight 0: written out, outside the
# {% generation %} markers, so it is context and carries no loss.
_WEIGHT0_BRANCH = """{%- elif message.role == "assistant" and message.weight is defined and message.weight == 0 %}
        {{- '<|im_start|>assistant\n' + message.content + '<|im_end|>\n' }}
    """


def has_weight0(rows: Sequence[dict]) -> bool:
    return any(m.get("weight") == 0 for r in rows for m in r["messages"])


def weighted_training_template(tokenizer: Any) -> str:
    """The tokenizer's training chat template (TRL's, with {% generation %} markers) taught that an assistant
    turn with ``weight: 0`` is context: a repair conversation trains on the fix, never on the broken DAG."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template if has_generation_markers(tokenizer.chat_template) \
        else get_training_chat_template(tokenizer)
    anchor = '{%- elif message.role == "assistant" %}'
    if not template or template.count(anchor) != 1:
        raise UserError("assistant turns with weight 0 (repair conversations, prepare.repair_share) need the "
                        "Qwen2.5 chat template this project's tokenizer uses; set prepare.repair_share: 0 for "
                        "another base model")
    return template.replace(anchor, _WEIGHT0_BRANCH.strip() + "\n    " + anchor)


def _with_weights(rows: Sequence[dict]) -> list[dict]:
    """Every message with a weight (1 unless 0), so the dataset's message struct has one schema."""
    return [{"messages": [{**m, "weight": m.get("weight", 1)} for m in r["messages"]]} for r in rows]


def build_trainer(
    base_dir: str | Path,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict],
    *,
    train: TrainParams,
    lora: LoraParams,
    seed: int,
    output_dir: str | Path,
    on_metrics: Callable[[dict[str, float], int], None] | None = None,
    use_unsloth: bool = False,
):
    """An SFTTrainer ready to train (tokenized, packed); returns (trainer, loss_history_callback)."""
    from datasets import Dataset
    from transformers import set_seed

    if not train_rows:
        raise UserError("no training examples: the train split is empty (check the prepare stage)")
    set_seed(seed)
    model, tokenizer, peft_config = load_for_training(
        base_dir, lora=lora, max_seq_len=train.max_seq_len, seed=seed, use_unsloth=use_unsloth
    )
    if train.assistant_only_loss and not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{base_dir}: the tokenizer has no chat template; assistant_only_loss needs one")
    from trl import SFTTrainer

    history = _callback_class()(on_metrics)
    has_eval = bool(val_rows)
    varlen = str(getattr(model.config, "_attn_implementation", "")).startswith("flash")
    if train.packing and not varlen:
        log.info("packed rows go one per micro-batch (%d accumulated per step): %s attention is not varlen",
                 train.batch_size * train.grad_accum, getattr(model.config, "_attn_implementation", "default"))
    weighted = has_weight0(train_rows) or has_weight0(val_rows)
    if weighted:
        if not train.assistant_only_loss:
            raise UserError("assistant turns with weight 0 (prepare.repair_share > 0) need train.assistant_only_loss")
        # trained with the weighted template; train_and_save puts the original back before saving the tokenizer
        tokenizer.init_kwargs["airflow_net_chat_template"] = tokenizer.chat_template
        tokenizer.chat_template = weighted_training_template(tokenizer)

    def dataset(rows: Sequence[dict]):
        return Dataset.from_list(_with_weights(rows) if weighted else [{"messages": r["messages"]} for r in rows])

    trainer = SFTTrainer(
        model=model,
        args=sft_config(train, output_dir=output_dir, seed=seed, has_eval=has_eval, varlen_attention=varlen),
        train_dataset=dataset(train_rows),
        eval_dataset=dataset(val_rows) if has_eval else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[history],
    )
    return trainer, history


def make_adapter_byte_stable(out_dir: str | Path) -> None:
    """Same weights, same bytes: drop what depends on the run rather than on the inputs.

    ``training_args.bin`` pickles the trainer's arguments with its temporary output folder (a new name each
    run); PEFT writes ``target_modules`` from a set, in an order that changes with Python's hash seed.
    """
    out_dir = Path(out_dir)
    (out_dir / "training_args.bin").unlink(missing_ok=True)
    cfg_path = out_dir / "adapter_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        for key in ("target_modules", "modules_to_save", "exclude_modules"):
            if isinstance(cfg.get(key), list):
                cfg[key] = sorted(cfg[key])
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def train_lora(
    base_dir: str | Path,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict],
    out_dir: str | Path,
    *,
    train: TrainParams,
    lora: LoraParams,
    seed: int,
    on_metrics: Callable[[dict[str, float], int], None] | None = None,
    use_unsloth: bool = False,
) -> SftResult:
    """Fine-tune a LoRA adapter on ``train_rows`` (evaluated on ``val_rows``) and save it with the
    tokenizer to ``out_dir`` (main process only)."""
    with tempfile.TemporaryDirectory(prefix="airflow-net-sft-") as scratch:
        trainer, history = build_trainer(
            base_dir, train_rows, val_rows, train=train, lora=lora, seed=seed, output_dir=scratch,
            on_metrics=on_metrics, use_unsloth=use_unsloth,
        )
        model = trainer.model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        log.info("LoRA r=%d on %s: %s trainable of %s parameters", lora.r, ",".join(lora.target_modules),
                 f"{trainable:,}", f"{total:,}")
        t0 = time.perf_counter()
        out = trainer.train()
        seconds = time.perf_counter() - t0
        tokens = history.num_tokens
        if not tokens:
            tokens = tokens_trained(trainer, int(out.global_step))
            log.info("the trainer logged no token count: %s tokens, estimated from the train dataset", f"{tokens:,.0f}")
        is_main = trainer.is_world_process_zero()
        if is_main:
            out_dir = Path(out_dir)
            tok = trainer.processing_class
            original = tok.init_kwargs.pop("airflow_net_chat_template", None)
            if original is not None:  # the saved tokenizer carries the template the GGUF and serving use
                tok.chat_template = original
            trainer.save_model(str(out_dir))  # the adapter (PEFT) and the tokenizer
            make_adapter_byte_stable(out_dir)
            if is_ours(base_dir):
                mark_tokenizer(out_dir)
    rows = [
        {"step": s, "train_loss": v.get("train_loss"), "eval_loss": v.get("eval_loss")}
        for s, v in sorted(history.rows.items())
        if "train_loss" in v or "eval_loss" in v
    ]
    steps = int(out.global_step)
    if rows and any(r["train_loss"] is not None and not math.isfinite(r["train_loss"]) for r in rows):
        raise UserError("fine-tuning diverged (the train loss is not finite); lower train.lr")
    return SftResult(
        history=rows,
        steps=steps,
        seconds=seconds,
        eval_seconds=history.eval_seconds,
        train_tokens=tokens,
        trainable_params=trainable,
        total_params=total,
        train_examples=len(train_rows),
        val_examples=len(val_rows),
        unsloth=use_unsloth,
        is_main=is_main,
    )


def tokens_trained(trainer, steps: int) -> float:
    """Tokens trained on, counted from the tokenized train dataset, for when the trainer logged no
    ``num_tokens`` (Unsloth's patched trainer does not, and a run shorter than ``logging_steps`` logs nothing):
    the rows ``steps`` consumed (per-device batch x accumulation x processes each) at the dataset's mean row
    length. Packed rows are nearly all ``max_seq_len`` long: 10 steps of the default run, counted by TRL
    78,153, estimated 76,076."""
    ds = getattr(trainer, "train_dataset", None)
    if ds is None or not len(ds) or "input_ids" not in ds.column_names:
        return 0.0
    lengths = [len(ids) for ids in ds["input_ids"]]
    args = trainer.args
    rows = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
    return float(rows * sum(lengths) / len(lengths))


def history_csv(history: Sequence[dict[str, Any]]) -> str:
    """CSV text with columns step,train_loss,eval_loss; an empty cell where a value is absent."""
    lines = ["step,train_loss,eval_loss"]
    for r in history:
        cells = [str(r["step"])] + [
            "" if r.get(k) is None else f"{r[k]:.6f}" for k in ("train_loss", "eval_loss")
        ]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"
