"""The corpus: DAG sources with their structured spec, validated by dagcheck and de-duplicated."""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

from airflow_net.params import CorpusParams, CorpusSourceParams
from airflow_net.utils import UserError, sha256_text

log = logging.getLogger(__name__)


def dag_uid(source: str) -> str:
    """A stable id for a DAG: the hash of its normalized source."""
    return sha256_text(source.strip())[:16]


def synthetic_records(n: int, seed: int, params: CorpusParams) -> list[dict[str, Any]]:
    """Ask the factory for DAGs until ``n`` distinct ones are collected (bounded)."""
    from airflow_net.data.factory import generate

    out: dict[str, dict[str, Any]] = {}
    attempts = 0
    for spec, source in generate(n * 3, seed=seed, airflow3_share=params.airflow3_share, max_tasks=params.max_tasks):
        attempts += 1
        uid = dag_uid(source)
        if uid not in out:
            out[uid] = {
                "uid": uid,
                "source": source,
                "spec": spec.to_dict(),
                "origin": "synthetic",
                "license": "Apache-2.0",
                "airflow": spec.airflow,
            }
        if len(out) >= n:
            break
    if len(out) < n:
        log.warning("the factory gave %d distinct DAGs in %d attempts (asked for %d)", len(out), attempts, n)
    return list(out.values())


def validate_records(records: list[dict[str, Any]], stats: Counter) -> list[dict[str, Any]]:
    """Keep the DAGs that pass dagcheck (for the Airflow version each was written for)."""
    from airflow_net.dagcheck import check_source

    kept = []
    for rec in records:
        report = check_source(rec["source"], filename=f"{rec['uid']}.py", airflow=int(rec.get("airflow") or 3))
        if report.ok:
            kept.append(rec)
            # Warnings do not drop a DAG (Airflow loads it); the card says how many valid files each touched.
            for code in sorted({f.code for f in report.findings if f.severity == "warning"}):
                stats[f"warning_{code}"] += 1
        else:
            stats["removed_invalid"] += 1
            for f in report.findings:
                if f.severity == "error":
                    stats[f"invalid_{f.code}"] += 1
            log.debug("dropped %s: %s", rec["uid"], [f.code for f in report.findings])
    return kept


def collect(src: CorpusSourceParams, params: CorpusParams, seed: int, stats: Counter) -> list[dict[str, Any]]:
    """The raw records of one source, each labelled with its origin."""
    if src.kind == "synthetic":
        got = synthetic_records(params.n_dags, seed, params)
        for r in got:
            r["origin"] = src.label
        return got
    from airflow_net.data.sources import LOADERS

    return LOADERS[src.kind](src, stats)


def apply_shares(
    by_source: dict[str, list[dict[str, Any]]], weights: dict[str, float | None], cap: int | None, seed: int
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Sample each source so that the corpus holds the sources in the proportions of their weights.

    With weights, the corpus is the largest one that keeps those shares without repeating a DAG (a small
    source limits the others: the "first exhausted" rule of ``datasets.interleave_datasets``). Without
    (``None``), each source counts by its size: all of it, or a proportional sample under ``cap``.
    Returns (kept per source, removed per source).
    """
    present = {k: v for k, v in by_source.items() if v}
    if not present:
        return by_source, {}
    weights = {k: (len(v) if weights.get(k) is None else weights[k]) for k, v in present.items()}
    total_w = sum(weights[k] for k in present)
    shares = {k: weights[k] / total_w for k in present}
    feasible = min(int(len(v) / shares[k] + 1e-9) for k, v in present.items())
    if len(present) == 1:
        feasible = len(next(iter(present.values())))
    target = min(feasible, cap) if cap else feasible
    quota = {k: min(len(present[k]), int(target * shares[k])) for k in present}
    # Largest remainder: hand out what rounding left, to the sources with room, biggest fractions first.
    left = target - sum(quota.values())
    for k in sorted(present, key=lambda k: (-(target * shares[k] - int(target * shares[k])), k)):
        if left <= 0:
            break
        if quota[k] < len(present[k]):
            quota[k] += 1
            left -= 1
    kept, removed = {}, {}
    for k, recs in by_source.items():
        q = quota.get(k, 0)
        if q >= len(recs):
            kept[k] = list(recs)
        else:
            idx = sorted(random.Random(f"{seed}:{k}").sample(range(len(recs)), q))
            kept[k] = [recs[i] for i in idx]
        removed[k] = len(recs) - len(kept[k])
    return kept, removed


def build_corpus(params: CorpusParams, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Collect, filter (length, exact and near duplicates, validator), weigh and cap the corpus.

    Returns (records, stats). ``stats`` holds flat counts (``collected_<kind>``, ``removed_<filter>``,
    ``kept``, ...) for the metrics file, plus ``sources`` (per source: what it gave and what was kept) and
    ``filters`` (each filter in the order applied and how many DAGs it removed) for the data card.
    """
    from airflow_net.data import dedupe

    stats: Counter = Counter()
    filters: dict[str, int] = {}
    sources: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    weights: dict[str, float | None] = {}
    near_ok: set[str] = set()
    for src in params.sources:
        got = collect(src, params, seed, stats)
        stats[f"collected_{src.kind}"] += len(got)
        sources[src.label] = {
            "kind": src.kind,
            "path": src.path,
            "license": src.license or ("Apache-2.0" if src.kind == "synthetic" else None),
            "weight": src.weight,
            "collected": len(got),
        }
        weights[src.label] = src.weight
        if src.near_dedupe if src.near_dedupe is not None else src.kind != "synthetic":
            near_ok.add(src.label)
        records.extend(got)
        log.info("source %s: %d DAGs", src.label, len(got))
    for key in ("removed_unreadable", "removed_no_code"):
        if stats[key]:
            filters[key.removeprefix("removed_")] = stats[key]

    def step(name: str, keep: list[dict[str, Any]]) -> list[dict[str, Any]]:
        removed = len(records) - len(keep)
        filters[name] = removed
        stats[f"removed_{name}"] += removed
        if removed:
            log.info("filter %s: removed %d, %d left", name, removed, len(keep))
        return keep

    records = step("too_short", [r for r in records if len(r["source"].strip()) >= params.min_dag_chars])
    records = step("too_long", [r for r in records if len(r["source"]) <= params.max_dag_chars])
    records = step("not_airflow", [r for r in records if "airflow" in r["source"]])
    records = step("duplicate", dedupe.drop_exact_duplicates(records)[0])
    vstats: Counter = Counter()
    records = step("invalid", validate_records(records, vstats) if records else [])
    # findings by code: errors of the dropped files, warnings of the kept ones
    stats.update({k: v for k, v in vstats.items() if k.startswith(("invalid_", "warning_"))})
    kept_near, removed_near = dedupe.drop_near_duplicates(
        records, params.near_dup_threshold, eligible=lambda r: r["origin"] in near_ok
    )
    records = step("near_duplicate", kept_near)
    if removed_near:
        log.info("near duplicates, e.g. %s", "; ".join(dedupe.describe(removed_near)))

    by_source: dict[str, list[dict[str, Any]]] = {label: [] for label in sources}
    for r in records:
        by_source[r["origin"]].append(r)
    by_source, removed_by_share = apply_shares(by_source, weights, params.max_dags, seed)
    records = step("weights_and_cap", [r for recs in by_source.values() for r in recs])
    for label, info in sources.items():
        info["kept"] = len(by_source.get(label, []))
        info["removed_by_weights"] = removed_by_share.get(label, 0)
        if info["kept"] == 0:
            log.warning("source %s contributed no DAG after filtering", label)

    kept = records
    random.Random(seed).shuffle(kept)
    if not kept:
        raise UserError("the corpus is empty after validation: check corpus.sources and the validator's findings")
    stats["kept"] = len(kept)
    stats["airflow3"] = sum(1 for r in kept if r.get("airflow") == 3)
    stats["mean_chars"] = round(sum(len(r["source"]) for r in kept) / len(kept), 1)
    out: dict[str, Any] = dict(stats)
    out["sources"] = sources
    out["filters"] = filters
    return kept, out
