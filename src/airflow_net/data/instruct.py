"""Instructions for each DAG: the seam between the corpus and the instruction providers.

A provider turns corpus records into (instruction, DAG) pairs, ``per_request`` per DAG. ``offline`` is the
describer (free, deterministic); ``anthropic`` asks Claude through the Message Batches API.
With ``canonical: true`` (the default) every DAG with a spec also gets its canonical request (the one-line
grammar of ``data/canonical.py``) as a fourth style, written offline whatever the provider: it is a pure
function of the spec, so the DAG model learns to build from the reformulator's output.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from airflow_net.data.spec import DagSpec
from airflow_net.params import InstructParams
from airflow_net.utils import UserError

log = logging.getLogger(__name__)


def pair(rec: dict[str, Any], instruction: str, variant: str, provider: str) -> dict[str, Any]:
    return {
        "uid": rec["uid"],
        "instruction": instruction,
        "variant": variant,
        "provider": provider,
        "source": rec["source"],
        "spec": rec.get("spec"),
        "airflow": rec.get("airflow", 3),
    }


def offline_pairs(records: list[dict[str, Any]], params: InstructParams, seed: int) -> list[dict[str, Any]]:
    from airflow_net.data.describer import instructions_for

    pairs = []
    for rec in records:
        if not rec.get("spec"):
            raise UserError(
                f"DAG {rec['uid']} ({rec.get('origin')}) has no spec: the offline describer needs one;"
                " use instruct.provider: anthropic for DAGs from folders or datasets"
            )
        rng = random.Random(f"{seed}:{rec['uid']}")
        for variant, text in instructions_for(DagSpec.from_dict(rec["spec"]), params.per_request, rng):
            pairs.append(pair(rec, text, variant, "offline"))
    return pairs


def canonical_pairs(records: list[dict[str, Any]], provider: str) -> list[dict[str, Any]]:
    """One canonical-request pair per record that has a spec (records without one are skipped)."""
    from airflow_net.data.describer import describe

    return [pair(rec, describe(DagSpec.from_dict(rec["spec"]), "canonical", random.Random(0)), "canonical", provider)
            for rec in records if rec.get("spec")]


def run_instruct(
    records: list[dict[str, Any]], params: InstructParams, seed: int, out_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Write instructions for every record; returns (pairs, metrics). ``out_dir`` holds provider state (ledger)."""
    if params.provider == "offline":
        pairs = offline_pairs(records, params, seed)
        if params.canonical:
            pairs += canonical_pairs(records, "offline")
        return pairs, {"provider": "offline", "dags": len(records), "instructions": len(pairs), "usd": 0.0}
    if params.provider == "anthropic":
        from airflow_net.data.anthropic_provider import anthropic_pairs

        pairs, metrics = anthropic_pairs(records, params, seed, out_dir)
        if params.canonical:
            extra = canonical_pairs(records, "offline")
            pairs = pairs + extra
            metrics = {**metrics, "canonical_instructions": len(extra)}
        return pairs, metrics
    raise UserError(f"unknown instruct.provider '{params.provider}', expected offline or anthropic")
