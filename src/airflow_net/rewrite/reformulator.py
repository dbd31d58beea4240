"""The reformulator as a callable: a person's request in, the canonical request out (one runtime, snapped).

Used wherever the DAG side reformulates first (`airflow-net generate --rewrite`, the templated strategy and its
stage), so that each loads, decodes and mends the same way.
"""

from __future__ import annotations

from pathlib import Path

from airflow_net.utils import UserError


class Reformulator:
    """``Reformulator(folder)(request) -> canonical request``; ``last_ms`` is the last call's decode time."""

    def __init__(self, folder: str | Path, *, runtime: str = "torch-fp32", exported: str | Path | None = None,
                 threads: int = 1, max_new_tokens: int = 128, snap: bool = True, beams: int = 1) -> None:
        """``folder``: the Hugging Face T5 folder (models/rewrite/finetuned); ``runtime``: a rewrite runtime name,
        loaded from ``exported/<runtime>`` (rewrite_export's models/rewrite/runtimes) unless it loads ``folder``."""
        from airflow_net.rewrite.export import runtime_folder
        from airflow_net.rewrite.runtimes import RUNTIMES, load

        if runtime not in RUNTIMES:
            raise UserError(f"unknown rewrite runtime {runtime!r}: expected one of {sorted(RUNTIMES)}")
        if RUNTIMES[runtime].loads_hf_folder:
            where = Path(folder)
            if not (where / "config.json").is_file():
                raise UserError(f"{folder}: no reformulator there (expected a T5 folder with config.json; "
                                "run `dvc repro rewrite_train`)")
        else:
            if exported is None:
                raise UserError(f"the {runtime} reformulator loads an exported folder: pass where rewrite_export "
                                "wrote it (models/rewrite/runtimes)")
            where = runtime_folder(runtime, folder, exported)
            if not where.is_dir():
                raise UserError(f"{where}: no exported {runtime} reformulator (add it to rewrite.runtimes/quant and "
                                "run `dvc repro rewrite_export`)")
        try:
            self.runtime = load(runtime, str(where), threads)
        except ValueError as e:
            raise UserError(str(e)) from e
        self.name = runtime
        self.max_new_tokens = max_new_tokens
        self.snap = snap
        # beams > 1: the first of the n best that parses (runtimes with nbest(); the others decode greedily)
        self.beams = beams if hasattr(self.runtime, "nbest") else 1
        self.last_ms = 0.0
        self.last_raw = ""

    def __call__(self, request: str) -> str:
        from airflow_net.rewrite.snap import pick, snap

        if self.beams > 1:
            texts, self.last_ms, _ = self.runtime.nbest(request, self.beams, self.max_new_tokens)
            self.last_raw = texts[0]
            return pick(texts, request, mend=self.snap)
        gen = self.runtime.generate([request], self.max_new_tokens)
        self.last_ms, self.last_raw = gen.ms[0], gen.texts[0]
        return snap(gen.texts[0], request) if self.snap else gen.texts[0]
