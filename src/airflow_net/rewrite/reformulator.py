"""The reformulator as a callable: a person's request in, the canonical request out (one runtime, snapped).

Used wherever the DAG side reformulates first (`airflow-net generate --rewrite`, the templated strategy and its
stage), so that each loads, decodes and mends the same way.
"""

from __future__ import annotations

from pathlib import Path

from airflow_net.utils import UserError


class Reformulator:
    """``Reformulator(folder)(request) -> canonical request``; ``last_ms`` is the last call's decode time."""

    def __init__(self, folder: str | Path, *, runtime: str = "torch-fp32", threads: int = 1,
                 max_new_tokens: int = 128, snap: bool = True, beams: int = 1) -> None:
        from airflow_net.rewrite.runtimes import load

        if not (Path(folder) / "config.json").is_file() and runtime.startswith("torch"):
            raise UserError(f"{folder}: no reformulator there (expected a T5 folder with config.json; "
                            "run `dvc repro rewrite_train`)")
        try:
            self.runtime = load(runtime, str(folder), threads)
        except ValueError as e:
            raise UserError(str(e)) from e
        self.max_new_tokens = max_new_tokens
        self.snap = snap
        # beams > 1: the first of the n best that parses (runtimes with nbest(); the others decode greedily)
        self.beams = beams if hasattr(self.runtime, "nbest") else 1
        self.last_ms = 0.0
        self.last_raw = ""

    def __call__(self, request: str) -> str:
        from airflow_net.rewrite.snap import pick, snap

        if self.beams > 1:
            texts, self.last_ms = self.runtime.nbest(request, self.beams, self.max_new_tokens)
            self.last_raw = texts[0]
            return pick(texts, request, mend=self.snap)
        gen = self.runtime.generate([request], self.max_new_tokens)
        self.last_ms, self.last_raw = gen.ms[0], gen.texts[0]
        return snap(gen.texts[0], request) if self.snap else gen.texts[0]
