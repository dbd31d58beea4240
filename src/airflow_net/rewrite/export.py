"""Export the fine-tuned reformulator to every selected CPU runtime and check each one against PyTorch fp32.

``export_all`` writes ``<out>/<runtime>/`` for each runtime name (its files, the tokenizer, a ``meta.json``);
a runtime that cannot export or load is recorded with one line saying why, and the others go on.
``compare`` decodes the same test pairs with every runtime and reports, per runtime: exact agreement of its
greedy outputs with torch-fp32's, and its own ROUGE-L / exact match / structural F1 against the gold rewrites
(``rewrite.evaluate.score``), so a quantization that changes answers shows up as a number, not a surprise.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from airflow_net.rewrite import runtimes
from airflow_net.rewrite.runtimes.base import RUNTIME_ERRORS, why
from airflow_net.utils import sha256_tree, write_json

log = logging.getLogger(__name__)

REFERENCE = "torch-fp32"


def runtime_folder(name: str, hf_folder: str | Path, out_root: str | Path) -> Path:
    """Where runtime ``name`` loads from: the Hugging Face folder for PyTorch, else its exported folder."""
    return Path(hf_folder) if runtimes.RUNTIMES[name].loads_hf_folder else Path(out_root) / name


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def export_all(names: list[str], hf_folder: str | Path, out_root: str | Path) -> dict[str, dict[str, Any]]:
    """Export each runtime into ``out_root/<name>``; per runtime its facts or ``{"skipped": why}``."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    source_hash = sha256_tree(hf_folder)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        folder = out_root / name
        folder.mkdir()
        try:
            facts = runtimes.export(name, str(hf_folder), str(folder))
        except RUNTIME_ERRORS as e:
            log.warning("%s: export failed, skipped: %s", name, why(e))
            shutil.rmtree(folder)
            folder.mkdir()
            results[name] = {"skipped": f"export: {why(e)}"}
            write_json(folder / "meta.json", {"runtime": name, "source": source_hash, **results[name]})
            continue
        loaded_from = runtime_folder(name, hf_folder, out_root)
        size = _size(loaded_from if loaded_from != Path(hf_folder) else Path(hf_folder) / "model.safetensors")
        results[name] = {"size_bytes": size, **facts}  # a runtime's own size_bytes (in-memory int8) wins
        write_json(folder / "meta.json", {"runtime": name, "source": source_hash,
                                          "format_version": runtimes.RUNTIMES[name].format_version,
                                          "loads": "hf_folder" if loaded_from == Path(hf_folder) else name,
                                          **results[name]})
        log.info("%s: exported (%.1f MB)", name, size / 1e6)
    return results


def compare(names: list[str], hf_folder: str | Path, out_root: str | Path, rows: list[dict], *,
            threads: int, max_new_tokens: int, exported: dict[str, dict[str, Any]] | None = None
            ) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Greedy outputs of every runtime on ``rows``; per runtime its agreement with torch-fp32 and its scores."""
    from airflow_net.rewrite.evaluate import score

    if REFERENCE not in names:
        raise ValueError(f"compare: {REFERENCE} must be among the runtimes (every runtime is compared with it)")
    if not rows:
        raise ValueError("compare: expected at least one test pair")
    queries = [r["query"] for r in rows]
    outputs: dict[str, list[str]] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in [REFERENCE] + [n for n in names if n != REFERENCE]:
        if exported and "skipped" in exported.get(name, {}):
            results[name] = {"skipped": exported[name]["skipped"]}
            continue
        try:
            rt = runtimes.load(name, str(runtime_folder(name, hf_folder, out_root)), threads)
            gen = rt.generate(queries, max_new_tokens)
        except RUNTIME_ERRORS as e:
            if name == REFERENCE:
                raise ValueError(f"{REFERENCE} could not decode {hf_folder}: {why(e)}") from e
            log.warning("%s: could not load or decode, skipped: %s", name, why(e))
            results[name] = {"skipped": f"load: {why(e)}"}
            continue
        outputs[name] = gen.texts
        scores, _ = score(gen.texts, rows, None)
        same = sum(a == b for a, b in zip(gen.texts, outputs[REFERENCE], strict=True))
        results[name] = {"agree_torch_fp32": round(same / len(rows), 4), **scores}
        log.info("%s: agrees with %s on %d/%d, ROUGE-L %.3f", name, REFERENCE, same, len(rows), scores["rougeL"])
    return results, outputs


def is_current(name: str, out_root: str | Path) -> bool:
    """Whether ``out_root/<name>`` holds an export of ``name`` in the layout this version writes (a skipped
    export counts: it records why)."""
    import json

    meta = Path(out_root) / name / "meta.json"
    if not meta.is_file():
        return False
    m = json.loads(meta.read_text())
    return "skipped" in m or m.get("format_version", 1) == runtimes.RUNTIMES[name].format_version


def loadable(names: list[str], hf_folder: str | Path, out_root: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> folder to load, name -> why skipped) for runtimes exported by ``export_all`` into ``out_root``."""
    import json

    folders, skipped = {}, {}
    for name in names:
        meta = Path(out_root) / name / "meta.json"
        if not meta.is_file():
            skipped[name] = f"not exported in {out_root} (add it to rewrite.runtimes/rewrite.quant and rerun export)"
            continue
        why = json.loads(meta.read_text()).get("skipped")
        if why:
            skipped[name] = why
        else:
            folders[name] = str(runtime_folder(name, hf_folder, out_root))
    return folders, skipped
