"""Small helpers shared by the stages: logging, atomic writes, JSONL, hashing, provenance, clean errors."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("airflow_net")


class UserError(RuntimeError):
    """A problem the user can fix (bad input, missing file, missing key); reported as one line, no traceback."""


def setup_logging(level: str | int | None = None) -> None:
    level = level or os.environ.get("AIRFLOW_NET_LOG", "INFO")
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def banner(text: str) -> None:
    """One-line marker between the phases of a stage."""
    log.info("=== %s ===", text)


def stage_entry(fn: Callable[[], Any]) -> Callable[[], None]:
    """Wrap a stage's main(): logging configured, user errors as one line and exit code 2."""
    from airflow_net.params import ParamsError  # local: keeps utils import-light

    @functools.wraps(fn)
    def wrapper() -> None:
        setup_logging()
        try:
            fn()
        except (UserError, ParamsError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Works for files and directories, so a crash never leaves a half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Stream (line number, object) from a JSONL file; a bad line is a UserError naming file and line."""
    path = Path(path)
    with path.open(encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{i}: not valid JSON ({exc.msg}); expected one JSON object per line") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            yield i, row


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found (run the stage that writes it first, e.g. `dvc repro`)")
    return [row for _, row in iter_jsonl(path)]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Hash a file or a directory (relative names and contents, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def versions(*packages: str) -> dict[str, str]:
    # major.minor only: a patch release does not change what a stage writes, and provenance inside an
    # output must not differ between two machines with the same pins (else the output's hash does)
    out = {"python": ".".join(platform.python_version_tuple()[:2])}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_meta(directory: str | Path, *, params: dict, inputs: dict[str, str | Path] | None = None, **extra: Any) -> None:
    """Provenance beside an artifact: the params used, input hashes, library versions."""
    meta = {
        "params": params,
        "inputs": {k: sha256_tree(v) for k, v in (inputs or {}).items() if Path(v).exists()},
        "versions": versions("torch", "transformers", "trl", "peft", "datasets", "llama_cpp_python", "airflow-net"),
        **extra,
    }
    write_json(Path(directory) / "meta.json", meta)
