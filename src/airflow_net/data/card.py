"""Data cards: what a dataset holds, where it came from, what was filtered out, how long its items are and
what it cost. Written beside each dataset as Markdown (to read) and JSON (to compare and to test).

Usage from a stage::

    card = corpus_card(records, stats, params=p.corpus.model_dump())
    write_data_card(out_dir, card)          # -> DATA_CARD.md, data_card.json
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from airflow_net.utils import write_json, write_text

CARD_MD = "DATA_CARD.md"
CARD_JSON = "data_card.json"

# What each filter removes: the card says it in words next to the count.
FILTER_DOC = {
    "unreadable": "files that are not UTF-8 text",
    "no_code": "rows without code in the configured field",
    "too_short": "sources shorter than corpus.min_dag_chars",
    "too_long": "sources longer than corpus.max_dag_chars",
    "not_airflow": "files that never mention airflow",
    "duplicate": "exact duplicates (same code up to whitespace)",
    "invalid": "DAGs the validator (dagcheck) rejects",
    "near_duplicate": "near duplicates (MinHash LSH, Jaccard >= corpus.near_dup_threshold)",
    "weights_and_cap": "sampled out to keep the sources' weights (and corpus.max_dags)",
    "invalid_answer": "model answers rejected (bad JSON, wrong count, empty, repeated, code pasted)",
    "failed_dags": "DAGs left without valid instructions after the retries",
    "invalid_dag": "generated DAGs the validator rejects",
    "no_code_block": "answers without a Python code block",
    "empty_instruction": "empty or unusable generated instructions",
}


def length_stats(values: Iterable[float]) -> dict[str, float]:
    """count, min, p50, mean, p90, max of a list of lengths (nearest-rank percentiles, no numpy needed)."""
    xs = sorted(values)
    if not xs:
        return {"count": 0}

    def pct(q: float) -> float:
        return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]

    return {
        "count": len(xs),
        "min": xs[0],
        "p50": pct(50),
        "mean": round(sum(xs) / len(xs), 1),
        "p90": pct(90),
        "max": xs[-1],
    }


def _lines(text: str) -> int:
    return text.count("\n") + 1 if text else 0


def corpus_card(
    records: list[dict[str, Any]], stats: dict[str, Any], *, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The card of a DAG corpus from ``build_corpus``'s (records, stats)."""
    n_tasks = [len(r["spec"]["tasks"]) for r in records if r.get("spec") and r["spec"].get("tasks") is not None]
    sources = [{"name": name, **info} for name, info in (stats.get("sources") or {}).items()]
    collected = sum(s.get("collected", 0) for s in sources)
    return {
        "title": "AirflowNet DAG corpus",
        "kind": "corpus",
        "summary": {"dags": len(records), "collected": collected},
        "sources": sources,
        "filters": [
            {"name": k, "removed": v, "what": FILTER_DOC.get(k, "")} for k, v in (stats.get("filters") or {}).items()
        ],
        "lengths": {
            "dag_chars": length_stats(len(r["source"]) for r in records),
            "dag_lines": length_stats(_lines(r["source"]) for r in records),
            **({"tasks": length_stats(n_tasks)} if n_tasks else {}),
        },
        "licenses": dict(Counter(str(r.get("license")) for r in records).most_common()),
        "warnings": _warning_rows(stats),
        "airflow_versions": {str(k): v for k, v in sorted(Counter(r.get("airflow") for r in records).items())},
        "cost": None,
        "params": params or {},
    }


def _warning_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """How many DAGs that passed validation carried each dagcheck warning (stats' `warning_<code>` counts,
    taken when the validator runs: before the near-duplicate filter and the sampling by weights), with the
    rule's name and whether it marks deprecated Airflow API."""
    from airflow_net.dagcheck.findings import DEPRECATION_CODES, RULES

    rows = []
    for key, n in sorted(stats.items()):
        if not key.startswith("warning_"):
            continue
        code = key.removeprefix("warning_")
        rule = RULES.get(code)
        rows.append({"code": code, "name": rule.name if rule else "ruff", "files": n,
                     "deprecated_api": code in DEPRECATION_CODES,
                     "what": rule.summary if rule else ""})
    return rows


def instruct_card(
    pairs: list[dict[str, Any]],
    metrics: dict[str, Any],
    *,
    records: list[dict[str, Any]] | None = None,
    params: dict[str, Any] | None = None,
    title: str = "AirflowNet instruction pairs",
) -> dict[str, Any]:
    """The card of (instruction, DAG) pairs from a provider's (pairs, metrics); ``records`` (the corpus)
    attributes each pair to its source and licence."""
    origin = {r["uid"]: (r.get("origin"), r.get("license")) for r in records or []}
    by_source: Counter = Counter()
    licenses: Counter = Counter()
    for p in pairs:
        o, lic = origin.get(p["uid"], (p.get("origin"), p.get("license")))
        by_source[(p.get("provider"), o)] += 1
        licenses[str(lic)] += 1
    sources = [
        {"name": f"{prov} on {o}" if o else str(prov), "provider": prov, "origin": o, "pairs": n}
        for (prov, o), n in sorted(by_source.items(), key=lambda kv: -kv[1])
    ]
    filters = [{"name": k, "removed": v, "what": FILTER_DOC.get(k, "")} for k, v in (metrics.get("filters") or {}).items()]
    cost_keys = (
        "requests",
        "input_tokens",
        "output_tokens",
        "usd",
        "usd_per_1k_instructions",
        "usd_if_live_one_per_instruction",
        "cost_ratio_vs_live_one_per_instruction",
    )
    cost = {k: metrics[k] for k in cost_keys if k in metrics}
    if "usd" in metrics and "usd" not in cost:
        cost["usd"] = metrics["usd"]
    return {
        "title": title,
        "kind": "instructions",
        "summary": {
            "pairs": len(pairs),
            "dags": len({p["uid"] for p in pairs}),
            "providers": sorted({str(p.get("provider")) for p in pairs}),
            "variants": dict(Counter(str(p.get("variant")) for p in pairs).most_common()),
        },
        "sources": sources,
        "filters": filters,
        "lengths": {
            "instruction_chars": length_stats(len(p["instruction"]) for p in pairs),
            "instruction_words": length_stats(len(p["instruction"].split()) for p in pairs),
            "dag_chars": length_stats(len(p["source"]) for p in {q["uid"]: q for q in pairs}.values()),
        },
        "licenses": dict(licenses.most_common()),
        "cost": cost or None,
        "params": params or {},
    }


def _table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    if not rows:
        return ["(none)"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return out


def render_markdown(card: dict[str, Any]) -> str:
    lines = [f"# {card['title']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in card.get("summary", {}).items()]
    lines += ["", "## Sources", ""]
    srcs = card.get("sources") or []
    cols = [c for c in ("name", "kind", "path", "provider", "license", "weight", "collected", "kept", "removed_by_weights", "pairs") if any(c in s for s in srcs)]
    lines += _table(srcs, cols)
    lines += ["", "## Filters (in the order applied)", ""]
    lines += _table(card.get("filters") or [], ["name", "removed", "what"])
    lines += ["", "## Lengths", ""]
    rows = [{"measure": k, **v} for k, v in (card.get("lengths") or {}).items()]
    lines += _table(rows, ["measure", "count", "min", "p50", "mean", "p90", "max"])
    if card.get("licenses"):
        lines += ["", "## Licences", ""]
        lines += _table([{"license": k, "items": v} for k, v in card["licenses"].items()], ["license", "items"])
    if card.get("warnings"):
        lines += ["", "## Validator warnings (DAGs that passed validation, before near-dedupe and sampling; "
                  "Airflow loads them)", ""]
        lines += _table(card["warnings"], ["code", "name", "files", "deprecated_api", "what"])
    if card.get("airflow_versions"):
        lines += ["", "## Airflow versions", ""]
        lines += _table([{"airflow": k, "dags": v} for k, v in card["airflow_versions"].items()], ["airflow", "dags"])
    lines += ["", "## Cost", ""]
    cost = card.get("cost")
    lines += [f"- **{k}**: {v}" for k, v in cost.items()] if cost else ["No API cost (built offline)."]
    if card.get("params"):
        lines += ["", "## Parameters", "", "```yaml"]
        import yaml

        lines += yaml.safe_dump(card["params"], sort_keys=False).rstrip().splitlines()
        lines += ["```"]
    return "\n".join(lines) + "\n"


def write_data_card(directory: str | Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``DATA_CARD.md`` and its JSON twin ``data_card.json`` into ``directory`` (atomically)."""
    directory = Path(directory)
    md, js = directory / CARD_MD, directory / CARD_JSON
    write_text(md, render_markdown(card))
    write_json(js, card)
    return md, js
