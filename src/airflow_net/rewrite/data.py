"""(query, rewrite) pairs for the reformulator, split by DAG into train/val/test JSONL.

The embedded default is made from the corpus specs: the rewrite is the canonical request, the query a
person-style request from the noiser (``noisy_per_dag`` each) or one of the describer's styles. Otherwise
pairs come from a JSONL file (one per split in a folder, or one file split by a seeded hash of the query) or a
dataset saved with ``save_to_disk`` (a DatasetDict with train/val|validation/test, or one Dataset split by hash),
with configurable field names. Each written row has ``query``, ``rewrite`` and, when known, ``spec`` and ``uid``.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any

from airflow_net.data.canonical import format_canonical
from airflow_net.data.describer import describe
from airflow_net.data.noiser import noisy_request
from airflow_net.data.spec import DagSpec
from airflow_net.params import RewriteDataParams
from airflow_net.utils import UserError, read_jsonl

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def split_of(key: str, seed: int, val_frac: float, test_frac: float) -> str:
    """A stable split for ``key``: the same key lands in the same split on every run and machine."""
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16**12
    return "test" if h < test_frac else "val" if h < test_frac + val_frac else "train"


def corpus_pairs(records: list[dict[str, Any]], p: RewriteDataParams, seed: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for rec in records:
        if not rec.get("spec"):
            continue
        spec = DagSpec.from_dict(rec["spec"])
        target = format_canonical(spec)
        rng = random.Random(f"{seed}:{rec['uid']}")
        queries = [("noisy", noisy_request(spec, rng)) for _ in range(p.noisy_per_dag)]
        queries += [(v, describe(spec, v, rng)) for v in p.described]
        split = split_of(rec["uid"], seed, p.val_frac, p.test_frac)
        for style, q in dict.fromkeys(queries):
            if len(q) <= p.max_query_chars:
                out[split].append({"uid": rec["uid"], "style": style, "query": q, "rewrite": target,
                                   "spec": rec["spec"]})
    if not any(out.values()):
        raise UserError("no corpus record has a spec: the embedded rewrite data needs specs (rewrite.data.source)")
    return out


def _rows(rows: list[dict], p: RewriteDataParams, where: str) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        if p.query_field not in r or p.rewrite_field not in r:
            raise UserError(f"{where} row {i}: expected fields '{p.query_field}' and '{p.rewrite_field}'"
                            f" (rewrite.data.query_field/rewrite_field), got {sorted(r)}")
        row = {"query": str(r[p.query_field]), "rewrite": str(r[p.rewrite_field])}
        for k in ("spec", "uid", "style"):
            if r.get(k) is not None:
                row[k] = r[k]
        out.append(row)
    return out


def _by_hash(rows: list[dict], p: RewriteDataParams, seed: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for r in rows:
        out[split_of(r.get("uid") or r["query"], seed, p.val_frac, p.test_frac)].append(r)
    return out


def external_pairs(p: RewriteDataParams, seed: int) -> dict[str, list[dict]]:
    path = Path(p.path or "")
    if not path.exists():
        raise UserError(f"rewrite.data.path {path} does not exist")
    if p.source == "jsonl":
        if path.is_file():
            return _by_hash(_rows(read_jsonl(path), p, str(path)), p, seed)
        names = {"train": ["train", "training"], "val": ["val", "dev", "validation"], "test": ["test"]}
        out = {}
        for split, cands in names.items():
            f = next((path / f"{c}.jsonl" for c in cands if (path / f"{c}.jsonl").exists()), None)
            if f is None:
                raise UserError(f"{path}: expected {split} as one of {[c + '.jsonl' for c in cands]}")
            out[split] = _rows(read_jsonl(f), p, str(f))
        return out
    from datasets import Dataset, DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, Dataset):
        return _by_hash(_rows(ds.to_list(), p, str(path)), p, seed)
    assert isinstance(ds, DatasetDict)
    alias = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}
    out = {alias[k]: _rows(ds[k].to_list(), p, f"{path}:{k}") for k in ds if k in alias}
    if set(out) != set(SPLITS):
        raise UserError(f"{path}: expected splits train, val (or validation/dev) and test, got {sorted(ds)}")
    return out


def build_splits(p: RewriteDataParams, seed: int, corpus: list[dict] | None) -> dict[str, list[dict]]:
    if p.source == "corpus":
        if corpus is None:
            raise UserError("rewrite.data.source: corpus needs the corpus records")
        out = corpus_pairs(corpus, p, seed)
    else:
        out = external_pairs(p, seed)
    if p.max_test is not None and len(out["test"]) > p.max_test:
        # one pair per DAG first (all styles of a DAG share its rewrite), then the rest, seeded
        rng = random.Random(seed)
        rows = out["test"][:]
        rng.shuffle(rows)
        seen: set = set()
        first = [r for r in rows if not (r.get("uid") in seen or seen.add(r.get("uid")))]
        rest = [r for r in rows if r not in first]
        out["test"] = (first + rest)[: p.max_test]
    for s in SPLITS:
        if not out[s]:
            raise UserError(f"the rewrite {s} split is empty: more data or larger rewrite.data.{s}_frac needed")
    return out
