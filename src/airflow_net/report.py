"""The Markdown report: metrics tables and PNG charts, readable offline (no CDN, unlike `dvc plots show`)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMPARE = [
    ("parse_rate", "parses"),
    ("valid_rate", "valid DAG (dagcheck)"),
    ("structural_f1", "structural F1"),
    ("task_f1", "task F1"),
    ("edge_f1", "edge F1"),
    ("dag_id_match", "dag_id match"),
    ("schedule_match", "schedule match"),
    ("operator_accuracy", "operator accuracy"),
]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def plot_losses(plots: Path, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    pre = _read_csv(plots / "pretrain_loss.csv")
    sft = _read_csv(plots / "train_loss.csv")
    if pre or sft:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        if pre:
            axes[0].plot([int(r["step"]) for r in pre], [float(r["loss"]) for r in pre], lw=1)
        axes[0].set(title="pre-training (tiny base)", xlabel="step", ylabel="loss")
        for key, style in (("train_loss", "-"), ("eval_loss", "o-")):
            pts = [(int(r["step"]), float(r[key])) for r in sft if r.get(key)]
            if pts:
                axes[1].plot(*zip(*pts, strict=True), style, lw=1, ms=3, label=key.replace("_", " "))
        axes[1].set(title="LoRA SFT", xlabel="step", ylabel="loss")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=110)
        plt.close(fig)
        made.append("loss.png")
    return made


def plot_compare(ev: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "base" not in ev or "finetuned" not in ev:
        return []
    keys = [k for k, _ in COMPARE if k in ev["base"]]
    x = range(len(keys))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.bar([i - 0.2 for i in x], [ev["base"][k] for k in keys], 0.4, label="base")
    ax.bar([i + 0.2 for i in x], [ev["finetuned"][k] for k in keys], 0.4, label="fine-tuned")
    ax.set_xticks(list(x), [dict(COMPARE)[k] for k in keys], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title(f"base vs fine-tuned on {ev['base'].get('n', '?')} test requests")
    fig.tight_layout()
    fig.savefig(out / "eval.png", dpi=110)
    plt.close(fig)
    return ["eval.png"]


ERROR_WORDS = {
    "syntax_error": "not valid Python",
    "undefined_name": "uses a name it never imports or defines",
    "non_public_import": "imports test helpers or internals (unittest, pytest, airflow.utils.tests)",
    "deprecated_syntax": "deprecated or removed Airflow syntax for the target version",
    "hardcoded_secret": "a password, token or key written into the code",
    "missing_setup": "leaves out owner / retries / retry delay / start date that the request asked for",
    "truncated": "cut off at max_tokens",
}
BREAKDOWN_TITLES = {
    "tasks": "requested tasks", "taskgroups": "requested TaskGroups", "xcom": "requested XCom",
    "sensors": "requested sensors", "style": "TaskFlow vs classic", "airflow": "target Airflow version",
    "lines": "generated code lines", "cyclomatic": "generated code cyclomatic complexity (radon)",
}


def _ci(m: dict[str, Any], key: str) -> str:
    if f"{key}_lo" not in m:
        return f"{m[key]:.3f}"
    return f"{m[key]:.3f} [{m[f'{key}_lo']:.3f}, {m[f'{key}_hi']:.3f}]"


def _breakdown_table(title: str, b: dict[str, Any], f: dict[str, Any]) -> list[str]:
    lines = [f"**{title}**", "", "| group | n | valid base | valid fine-tuned | F1 base | F1 fine-tuned |",
             "|---|---:|---:|---:|---:|---:|"]
    for g in sorted(set(b) | set(f)):
        bb, ff = b.get(g, {}), f.get(g, {})

        def cell(d: dict[str, Any], k: str) -> str:
            return f"{d[k]:.2f}" if k in d else "-"

        lines.append(f"| {g} | {bb.get('n', 0)}/{ff.get('n', 0)} | {cell(bb, 'valid_rate')} | "
                     f"{cell(ff, 'valid_rate')} | {cell(bb, 'structural_f1')} | {cell(ff, 'structural_f1')} |")
    return [*lines, ""]


def plot_complexity(ev: dict[str, Any], out: Path) -> list[str]:
    """Valid rate and structural F1 against requested tasks and the code's lines and cyclomatic complexity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "by_request" not in ev.get("base", {}):
        return []
    panels = [("by_request", "tasks"), ("by_code", "lines"), ("by_code", "cyclomatic")]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.6), sharey=True)
    for ax, (sect, fact) in zip(axes, panels, strict=True):
        for which, color in (("base", "tab:blue"), ("finetuned", "tab:orange")):
            groups = ev[which][sect].get(fact, {})
            xs = sorted(groups)
            for key, style in (("valid_rate", "o-"), ("structural_f1", "s--")):
                ax.plot(xs, [groups[x][key] for x in xs], style, color=color, ms=4,
                        label=f"{which} {key.replace('_', ' ')}")
        ax.set(title=BREAKDOWN_TITLES[fact], ylim=(-0.02, 1.05))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "complexity.png", dpi=110)
    plt.close(fig)
    return ["complexity.png"]


def what_changed(ev: dict[str, Any]) -> str:
    """One paragraph from the numbers: the headline gains and whether the paired tests back them."""
    tests = ev.get("tests", {})
    parts = []
    for key, label in COMPARE[:3]:
        if key not in ev.get("gain", {}):
            continue
        g, t = ev["gain"][key], tests.get(key, {})
        verdict = "significant" if t.get("significant") else "not significant"
        parts.append(f"{label} went from {ev['base'][key]:.3f} to {ev['finetuned'][key]:.3f} ({g:+.3f}; "
                     f"{t.get('test', 'no test')}, p={t.get('p_value', float('nan')):.3g}: {verdict} at 5%)")
    text = "Fine-tuning: " + "; ".join(parts) + "." if parts else ""
    cls_b, cls_f = ev.get("base", {}).get("error_classes", {}), ev.get("finetuned", {}).get("error_classes", {})
    moved = sorted(((cls_f[c] - cls_b[c], c) for c in ERROR_WORDS if c in cls_b and c in cls_f), key=lambda t: t[0])
    if moved and moved[0][0] < 0:
        d, c = moved[0]
        text += f" The error class that fell most: {ERROR_WORDS[c]} ({cls_b[c]:.3f} -> {cls_f[c]:.3f})."
    if moved and moved[-1][0] > 0:
        d, c = moved[-1]
        text += f" The one that rose most: {ERROR_WORDS[c]} ({cls_b[c]:.3f} -> {cls_f[c]:.3f})."
    return text


def judge_section(j: dict[str, Any], examples: dict[str, Any]) -> list[str]:
    """The LLM judge: mean score per model with its interval, the paired test, rank agreement with structural
    F1, failures, what it cost, and two of the fine-tuned model's reasons."""
    run = j.get("run", {})
    cost = f"${run['usd']:.4f}" if "usd" in run else "no API cost (self-hosted endpoint)"
    lines = ["## LLM judge: instruction following", "",
             f"{j['base']['n']} answers per model (the same requests) scored 1-5 by {j['model']} ({j['provider']}), "
             f"with a one-line reason each; unparsable answers are failures, never guessed. Cost: {cost}, "
             f"{run.get('requests_this_run', 0)} requests asked in this run, {run.get('requests_reused', 0)} from "
             "the cache. Source: metrics/eval.json `judge`.", "",
             "| model | mean score [95% CI] | scored | failures | rank agreement with structural F1 (Spearman) |",
             "|---|---|---:|---:|---:|"]
    for which in ("base", "finetuned"):
        m = j[which]
        mean = _ci(m, "mean_score") if "mean_score" in m else "-"
        rho = m.get("rank_agreement_f1")
        lines.append(f"| {which} | {mean} | {m['scored']} | {m['failures']} | {'-' if rho is None else f'{rho:.3f}'} |")
    t = j.get("test")
    if t:
        verdict = "significant" if t["significant"] else "not significant"
        lines += ["", f"Fine-tuned minus base, on the {t['n']} requests scored for both: {t['diff']:+.3f} "
                  f"[{t['diff_lo']:+.3f}, {t['diff_hi']:+.3f}] ({t['test']}, p={t['p_value']:.3g}: {verdict} at 5%)."]
    why = {w: j[w]["failure_reasons"] for w in ("base", "finetuned") if j[w].get("failure_reasons")}
    if why:
        lines += ["", "Failures by reason: " + "; ".join(
            f"{w}: " + ", ".join(f"{k} {v}" for k, v in r.items()) for w, r in why.items()) + "."]
    lines.append("")
    for e in (examples.get("finetuned") or [])[:2]:
        lines.append(f"- fine-tuned, score {e['score']} (`{e['uid']}`, {e['variant']} request): {e['reason']}")
    return [*lines, ""]


def evaluation_sections(ev: dict[str, Any], examples: dict[str, Any]) -> list[str]:
    """Intervals and tests, error classes with an example each, and the breakdowns (all from metrics/eval.json
    and reports/eval/examples.json)."""
    b, f, tests = ev["base"], ev["finetuned"], ev.get("tests", {})
    conf = ev.get("bootstrap", {})
    lines = ["## What changed", "", what_changed(ev), "",
             "## Base vs fine-tuned, with 95% intervals", "",
             f"Bootstrap percentile intervals ({conf.get('resamples', '?')} resamples, seed {conf.get('seed', '?')}); "
             "paired tests on the same requests (exact McNemar for pass/fail rates, paired bootstrap for F1). "
             "Source: metrics/eval.json.", "",
             "| metric | base [95% CI] | fine-tuned [95% CI] | gain | test, p | verdict | fine-tuned + autofix [95% CI] |",
             "|---|---|---|---:|---|---|---|"]
    fx = ev.get("finetuned_autofix", {})
    for key, label in COMPARE:
        if key not in b:
            continue
        t = tests.get(key)
        verdict = ("significant" if t["significant"] else "not significant") if t else "-"
        test = f"{t['test']}, p={t['p_value']:.3g}" if t else "-"
        fixed = _ci(fx, key) if key in fx else "-"
        lines.append(f"| {label} | {_ci(b, key)} | {_ci(f, key)} | {f[key] - b[key]:+.3f} | {test} | {verdict} | {fixed} |")
    lines.append("")
    if fx:
        lines += ["The last column: the fine-tuned answers after dagcheck's fixes (`generate.autofix`: a "
                  "forgotten import, `a >> a`, a task never written left out of the dependencies, ...), as "
                  "`airflow-net generate` returns them (metrics/eval.json "
                  "`finetuned_autofix`). Tasks count only where their operator is imported, so the raw task F1 "
                  "misses the tasks of an operator the model forgot to import.", ""]
    if "error_classes" in b:
        lines += ["## Error classes", "", "Share of answers in each class (an answer can be in several). "
                  "Source: metrics/eval.json `*.error_classes`; examples: reports/eval/examples.json.", "",
                  "| class | in plain words | base [95% CI] | fine-tuned [95% CI] |", "|---|---|---|---|"]
        for c, words in ERROR_WORDS.items():
            if c in b["error_classes"]:
                lines.append(f"| {c} | {words} | {_ci(b['error_classes'], c)} | {_ci(f['error_classes'], c)} |")
        tr = ev.get("training", {})
        if tr.get("syntax_error_rate") is not None:
            lines.append(f"\nFor comparison, the training answers' own syntax-error rate: "
                         f"{tr['syntax_error_rate']:.3f} over {tr['n']} SFT answers (metrics/eval.json `training`).")
        lines.append("")
        for which in ("finetuned", "base"):
            for c, e in (examples.get(which) or {}).items():
                lines += [f"- {which}, {c} (`{e['uid']}`, {e.get('variant', '?')} request): {e['detail']}", "", "```python", e["snippet"], "```", ""]
    af = ev.get("airflow_sample")
    if af:
        lines += ["## Real Airflow on a sample", "",
                  f"{af['n']} generated DAGs per model (the same requests) loaded by Airflow {af['airflow_version']}'s "
                  "DagBag in the sandbox. Source: metrics/eval.json `airflow_sample`.", "",
                  "| model | load rate [95% CI] | static verdict agrees | static valid, Airflow fails | "
                  "static invalid, Airflow loads |", "|---|---|---:|---:|---:|"]
        for which in ("base", "finetuned"):
            a = af[which]
            lines.append(f"| {which} | {_ci(a, 'load_rate')} | {a['static_agreement']:.3f} | "
                         f"{a['static_valid_airflow_fails']} | {a['static_invalid_airflow_loads']} |")
        lines.append("")
    elif "airflow_sample" in ev:
        lines += ["Real Airflow on a sample: off (`evaluate.airflow_sample: 0`).", ""]
    if ev.get("judge"):
        lines += judge_section(ev["judge"], examples.get("judge") or {})
    if "by_variant" in b:
        lines += ["## Breakdowns", "", "Source: metrics/eval.json `*.by_variant`, `*.by_request`, `*.by_code`; "
                  "n is base/fine-tuned.", ""]
        lines += _breakdown_table("request style (describer variant)", b["by_variant"], f["by_variant"])
        for sect in ("by_request", "by_code"):
            for fact, title in BREAKDOWN_TITLES.items():
                if fact in b.get(sect, {}):
                    lines += _breakdown_table(title, b[sect][fact], f[sect].get(fact, {}))
    return lines


def load_strategies(metrics: Path) -> dict[str, dict[str, Any]]:
    """metrics/strategies/<name>.json of the strategies stage, by strategy name (empty when it has not run)."""
    folder = metrics / "strategies"
    return {f.stem: _load(f) for f in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def _num(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def strategies_section(strategies: dict[str, dict[str, Any]]) -> list[str]:
    """One table: each strategy on the same requests, by request group, with what a valid DAG cost."""
    if not strategies:
        return []
    lines = ["## Generation strategies side by side", "",
             "The fine-tuned model on the same test DAGs, asked once as the describer wrote it and once as a person "
             "would (the noiser); `metrics/strategies/<name>.json`. Cost per valid DAG: all the time (or tokens) "
             "spent, divided by the valid DAGs it bought.", "",
             "| strategy | requests | valid rate [95% CI] | structural F1 | dag_id | s / request | s / valid DAG "
             "| tokens / request | candidates | rounds | fell back |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in strategies.items():
        for group in ("describer", "person", "all"):
            g = m.get(group)
            if not g:
                continue
            lines.append(
                f"| {name} | {group} ({g['n']}) | {g['valid_rate']:.3f} [{g['valid_rate_lo']:.3f}, "
                f"{g['valid_rate_hi']:.3f}] | {g['structural_f1']:.3f} | {g['dag_id_match']:.3f} | "
                f"{g['seconds_per_request']:.2f} | {_num(g['seconds_per_valid_dag'], '.2f')} | "
                f"{g['tokens_per_request']:.0f} | {g['candidates_per_request']:.2f} | {g['rounds_per_request']:.2f} | "
                f"{g['fallback_rate']:.2f} |")
    wider = {name: m["wider"] for name, m in strategies.items() if m.get("wider")}
    if wider:
        lines += ["", "Strategies run on more test DAGs as well (`strategies.sample_overrides`; the table above keeps "
                  "the shared requests):", "",
                  "| strategy | requests | valid rate [95% CI] | structural F1 [95% CI] | dag_id | s / request "
                  "| fell back |", "|---|---|---|---|---:|---:|---:|"]
        for name, w in wider.items():
            for group in ("describer", "person", "all"):
                g = w.get(group)
                if g:
                    lines.append(
                        f"| {name} | {group} ({g['n']}) | {g['valid_rate']:.3f} [{g['valid_rate_lo']:.3f}, "
                        f"{g['valid_rate_hi']:.3f}] | {g['structural_f1']:.3f} [{g['structural_f1_lo']:.3f}, "
                        f"{g['structural_f1_hi']:.3f}] | {g['dag_id_match']:.3f} | {g['seconds_per_request']:.2f} | "
                        f"{g['fallback_rate']:.2f} |")
    return lines + [""]


def plot_strategies(strategies: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """Valid rate (with its interval) against seconds per request, one point per strategy and request group."""
    if not strategies:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for group, marker in (("describer", "o"), ("person", "s")):
        for name, m in strategies.items():
            g = m.get(group)
            if not g:
                continue
            y, lo, hi = g["valid_rate"], g["valid_rate_lo"], g["valid_rate_hi"]
            ax.errorbar([g["seconds_per_request"]], [y], yerr=[[y - lo], [hi - y]], fmt=marker, capsize=3)
            ax.annotate(f"{name} ({group})", (g["seconds_per_request"], y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xlabel("seconds per request")
    ax.set_ylabel("valid rate (95% CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("strategies: validity against time")
    fig.tight_layout()
    fig.savefig(out / "strategies.png", dpi=110)
    plt.close(fig)
    return ["strategies.png"]


def reformulator_section(metrics: Path) -> list[str]:
    """The reformulator: base vs fine-tuned (raw and snapped), each CPU runtime against torch-fp32, and latency."""
    ev, ex, bench = (_load(metrics / f) for f in ("rewrite_eval.json", "rewrite_export.json", "rewrite_bench.json"))
    if not (ev or ex or bench):
        return []
    lines = ["## The reformulator (a person's request -> the canonical request)", ""]
    if ev:
        lines += ["`metrics/rewrite_eval.json`, test split. *snapped*: the fine-tuned greedy answers mended and with "
                  "the request's ids copied after decoding (`rewrite.snap`); *served*: the first of `rewrite.beams` "
                  "beams that parses, snapped: what the templated and reformulated strategies use.", "",
                  "| model | eval_loss | ROUGE-L | exact match | structural F1 | parses |", "|---|---:|---:|---:|---:|---:|"]
        for which in ("base", "finetuned", "finetuned_snapped", "finetuned_served"):
            m = ev.get(which)
            if m:
                lines.append(f"| {which} | {_num(m.get('eval_loss'))} | {m['rougeL']:.3f} | {m['exact_match']:.3f} | "
                             f"{_num(m.get('structural_f1'))} | {_num(m.get('parse_rate'))} |")
        lines.append("")
    if ex.get("runtimes"):
        lines += [f"Each CPU runtime on the same {ex.get('n')} test queries (`metrics/rewrite_export.json`): how often "
                  "its greedy answer is exactly torch-fp32's, and its own scores.", "",
                  "| runtime | size MB | same as torch-fp32 | ROUGE-L | exact match | structural F1 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, m in ex["runtimes"].items():
            if "skipped" in m:
                lines.append(f"| {name} | skipped: {m['skipped']} | | | | |")
                continue
            size = m.get("size_bytes")
            lines.append(f"| {name} | {_num(size / 1e6 if size else None, '.1f')} | "
                         f"{_num(m.get('agree_torch_fp32'))} | {_num(m.get('rougeL'))} | {_num(m.get('exact_match'))} | "
                         f"{_num(m.get('structural_f1'))} |")
        lines.append("")
    rows = [r for r in bench.get("rows", []) if "p50" in r]
    if rows:
        lines += [f"Latency, one query at a time, exactly {bench.get('max_new_tokens')} generated tokens "
                  f"(`metrics/rewrite_bench.json`, {bench.get('rounds')} interleaved rounds; run facts, not cached):", "",
                  "| threads | runtime | P50 ms | P90 | P99 | P99/P50 | speed-up vs torch-fp32 | cold start ms | peak RSS MB |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['threads']} | {r['runtime']} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | "
                         f"{r['p99_over_p50']:.2f} | {_num(r.get('speedup_p50_vs_torch_fp32'), '.2f')} | "
                         f"{_num(r.get('cold_start_ms'), '.0f')} | {_num(r.get('peak_rss_mb'), '.0f')} |")
        if bench.get("fastest"):
            f = bench["fastest"]
            lines += ["", f"Fastest: **{f['runtime']}** at {f['threads']} thread(s)."]
        lines.append("")
    return lines


def load_quant_sweep(metrics: Path) -> dict[str, dict[str, Any]]:
    """metrics/quant_sweep/<type>.json of the quant_sweep stage, by type (empty when it has not run)."""
    folder = metrics / "quant_sweep"
    return {f.stem: _load(f) for f in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def quant_sweep_section(sweep: dict[str, dict[str, Any]]) -> list[str]:
    """One table of the quantization types, largest file first, and the type the numbers say to ship."""
    if not sweep:
        return []
    from airflow_net.export.quality import REFERENCE, pick_smallest

    choice = pick_smallest(sweep)
    verdicts = choice["verdicts"]
    any_m = next(iter(sweep.values()))
    lines = ["## Quantization chosen by measured quality", "",
             f"The fine-tuned model quantized from its {REFERENCE} GGUF, each type on the same {any_m['requests']} "
             "seeded test requests (`metrics/quant_sweep/<type>.json`). tokens/s: generated tokens per second, all "
             "slots together (as `metrics/generate.json`); tokens/CPU-s: per CPU second, steadier on a shared "
             "machine. KL: the mean and 99th percentile of "
             f"KL({REFERENCE} || type) in nats over the gold answers' tokens, teacher-forced (llama.cpp's method); "
             f"top-1: the share of those tokens where both models rank the same token first. A type is within "
             f"{REFERENCE} when its valid rate and structural F1 lie inside {REFERENCE}'s 95% intervals and its mean "
             "KL is at most `quant_sweep.max_kl`.", "",
             "| type | MB | x F16 | tokens/s | tokens/CPU-s | valid rate [95% CI] | structural F1 [95% CI] | KL mean | KL p99 "
             "| top-1 | within F16 |",
             "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|"]
    for name, m in sorted(sweep.items(), key=lambda kv: -kv[1]["size_mb"]):
        v = verdicts.get(name, {})
        within = "yes" if v.get("ok") else ("no: " + ", ".join(v.get("outside", [])) if v else "-")
        lines.append(
            f"| {name} | {m['size_mb']:.2f} | {m['size_vs_reference']:.2f} | {m['tokens_per_s']:.0f} | "
            f"{m['tokens_per_cpu_s']:.0f} | "
            f"{m['valid_rate']:.3f} [{m['valid_rate_lo']:.3f}, {m['valid_rate_hi']:.3f}] | "
            f"{m['structural_f1']:.3f} [{m['structural_f1_lo']:.3f}, {m['structural_f1_hi']:.3f}] | "
            f"{m['kl_mean']:.5f} | {m['kl_p99']:.5f} | {m['top1_agreement']:.3f} | {within} |")
    lines.append("")
    if choice["pick"]:
        p = sweep[choice["pick"]]
        lines.append(f"**Smallest type within {REFERENCE}: {choice['pick']}** ({p['size_mb']:.2f} MB, "
                     f"{p['size_vs_reference']:.0%} of {REFERENCE}; mean KL {p['kl_mean']:.5f}, top-1 "
                     f"{p['top1_agreement']:.3f}). With {any_m['requests']} requests the intervals are wide: "
                     "\"within\" means no difference this sample can see, and the KL says how close the model is.")
    else:
        lines.append(f"No type picked: {choice['reason']}.")
    return lines + [""]


def plot_quant_sweep(sweep: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """Mean KL against F16 and structural F1 against file size, one point per type."""
    if not sweep:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, m in sweep.items():
        if m["kl_mean"] > 0:  # the reference against itself: 0, off a log scale
            a.scatter([m["size_mb"]], [m["kl_mean"]])
            a.annotate(name, (m["size_mb"], m["kl_mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        y, lo, hi = m["structural_f1"], m["structural_f1_lo"], m["structural_f1_hi"]
        b.errorbar([m["size_mb"]], [y], yerr=[[y - lo], [hi - y]], fmt="o", capsize=3)
        b.annotate(name, (m["size_mb"], y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    a.set_yscale("log")
    a.set_xlabel("file size (MB)")
    a.set_ylabel("mean KL vs F16 (nats; F16: 0)")
    b.set_xlabel("file size (MB)")
    b.set_ylabel("structural F1 (95% CI)")
    fig.suptitle("quantization: divergence and quality against size")
    fig.tight_layout()
    fig.savefig(out / "quant_sweep.png", dpi=110)
    plt.close(fig)
    return ["quant_sweep.png"]


def write_report(metrics: Path, plots: Path, out: Path, eval_dir: Path | None = None) -> Path:
    """Render reports/summary/README.md (+ PNGs) from the metrics and plot files."""
    out.mkdir(parents=True, exist_ok=True)
    ev = _load(metrics / "eval.json")
    tr = _load(metrics / "train.json")
    base = _load(metrics / "base.json")
    prep = _load(metrics / "prepare.json")
    exp = _load(metrics / "export.json")
    examples = _load(eval_dir / "examples.json") if eval_dir else {}
    strategies = load_strategies(metrics)
    sweep = load_quant_sweep(metrics)
    images = (plot_losses(plots, out) + plot_compare(ev, out) + plot_complexity(ev, out)
              + plot_strategies(strategies, out) + plot_quant_sweep(sweep, out))

    lines = ["# AirflowNet run report", ""]
    if ev:
        lines += ["## Base vs fine-tuned", "", "| metric | base | fine-tuned | gain |", "|---|---:|---:|---:|"]
        for key, label in COMPARE:
            if key in ev.get("base", {}):
                b, f = ev["base"][key], ev["finetuned"][key]
                lines.append(f"| {label} | {b:.3f} | {f:.3f} | {f - b:+.3f} |")
        lines += ["", f"Test requests per model: {ev['base'].get('n')}.", ""]
        for which in ("base", "finetuned"):
            errs = ev.get(which, {}).get("errors") or {}
            if errs:
                top = ", ".join(f"{k}: {v}" for k, v in sorted(errs.items(), key=lambda kv: -kv[1])[:8])
                lines.append(f"- {which} validator errors: {top}")
        lines.append("")
        if "finetuned" in ev:
            lines += evaluation_sections(ev, examples)
    lines += strategies_section(strategies)
    lines += reformulator_section(metrics)


    lines += quant_sweep_section(sweep)
    for img in images:
        lines += [f"![{img}]({img})", ""]
    if prep.get("train"):
        t = prep["train"]
        lines += ["## Data", "",
                  f"- DAGs per split: {prep.get('dags')}",
                  f"- train examples: {t['examples']}, tokens p50/p95/max: {t['tokens_p50']}/{t['tokens_p95']}/{t['tokens_max']}",
                  f"- truncated at max_seq_len={t['max_seq_len']}: {t['truncated']} ({t['truncation_rate']:.1%})", ""]
    if base or tr:
        lines += ["## Training", ""]
        for name, m in (("base (pre-training)", base), ("LoRA SFT", tr)):
            if m:
                shown = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
                lines.append(f"- {name}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        lines.append("")
    if exp:
        lines += ["## Export", "", "```json", json.dumps(exp, indent=2)[:4000], "```", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    log.info("report written to %s (%d charts)", path, len(images))
    return path
