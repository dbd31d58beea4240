"""Fine-tuning the reformulator with ``Seq2SeqTrainer``: eval_loss and generation-based ROUGE-L on val at
every evaluation, the curve to a DVC plot CSV and MLflow. Full fine-tuning by default, LoRA (PEFT) as an option."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from airflow_net.params import RewriteTrainParams

log = logging.getLogger(__name__)


def rouge_l(preds: list[str], refs: list[str]) -> float:
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return sum(sc.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs, strict=True)) / max(1, len(refs))


def tokenize(rows: list[dict], tok, p: RewriteTrainParams):
    from datasets import Dataset

    ds = Dataset.from_list([{"query": r["query"], "rewrite": r["rewrite"]} for r in rows])

    def enc(b: dict[str, list]) -> dict[str, Any]:
        x = tok(b["query"], max_length=p.max_source_len, truncation=True)
        x["labels"] = tok(text_target=b["rewrite"], max_length=p.max_target_len, truncation=True)["input_ids"]
        return x

    return ds.map(enc, batched=True, remove_columns=["query", "rewrite"])


@torch.no_grad()
def generate(model, tok, queries: list[str], *, batch_size: int = 32, max_new_tokens: int = 128,
             max_source_len: int = 192) -> list[str]:
    """Greedy rewrites of ``queries`` (in order)."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(queries), batch_size):
        enc = tok(queries[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                  max_length=max_source_len)
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        out += tok.batch_decode(ids, skip_special_tokens=True)
    return [o.strip() for o in out]


def finetune(model, tok, train_rows: list[dict], val_rows: list[dict], p: RewriteTrainParams, seed: int,
             work_dir: Path, tracker=None):
    """Train ``model`` in place; returns (model, curve rows: step, train/eval loss, val ROUGE-L, seconds)."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    if p.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=p.lora_r,
                                                 lora_alpha=p.lora_alpha, target_modules=["q", "v"]))
    train_ds = tokenize(train_rows, tok, p)
    val_small = val_rows[: p.max_eval_examples]
    val_ds = tokenize(val_small, tok, p)
    curve: list[dict] = []
    t0 = time.time()

    class Curve(TrainerCallback):
        """Generation-based ROUGE-L on val beside each eval_loss (Trainer's own eval gives the loss only)."""

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
            preds = generate(model, tok, [r["query"] for r in val_small], max_source_len=p.max_source_len,
                             max_new_tokens=p.max_target_len)
            rl = rouge_l(preds, [r["rewrite"] for r in val_small])
            exact = sum(a == r["rewrite"] for a, r in zip(preds, val_small, strict=True)) / len(val_small)
            train_loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
            row = {"step": state.global_step, "train_loss": train_loss,
                   "eval_loss": round(metrics["eval_loss"], 4), "val_rougeL": round(rl, 4),
                   "val_exact": round(exact, 4), "seconds": round(time.time() - t0, 1)}
            curve.append(row)
            log.info("step %d: eval_loss %.3f, val ROUGE-L %.3f, exact %.2f (%.0f s)", row["step"],
                     row["eval_loss"], rl, exact, row["seconds"])
            if tracker is not None:
                tracker.log_metrics({k: v for k, v in row.items() if k != "step" and v is not None},
                                    step=state.global_step)
            model.train()

    args = Seq2SeqTrainingArguments(
        output_dir=str(work_dir), max_steps=p.max_steps, per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=p.batch_size, learning_rate=p.lr, lr_scheduler_type="constant_with_warmup",
        warmup_steps=p.warmup_steps, weight_decay=0.0, eval_strategy="steps", eval_steps=p.eval_steps,
        logging_steps=max(1, p.eval_steps // 4), save_strategy="no", report_to=[], seed=seed, data_seed=seed,
        use_cpu=True, dataloader_num_workers=0, predict_with_generate=False, disable_tqdm=True,
        max_grad_norm=1.0,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                             data_collator=DataCollatorForSeq2Seq(tok, model=model, padding=True),
                             processing_class=tok, callbacks=[Curve()])
    trainer.evaluate()  # the step-0 point of the curve
    trainer.train()
    if not curve or curve[-1]["step"] != trainer.state.global_step:
        trainer.evaluate()
    if p.method == "lora":
        model = model.merge_and_unload()
    return model, curve
