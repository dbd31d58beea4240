"""DAG files that people (not Airflow's maintainers) wrote, shipped inside third-party packages on PyPI.

The manifest (data/people_dags.json, made by `tools/fetch_people_dags.py scan`) pins each package version and
distribution file with its sha256, its licence as its metadata states it, and for each DAG file its path inside
the distribution, its sha256 and the Airflow major it was written for. No DAG file is committed: they are
fetched from the pinned distribution (pip download, PyPI) and checked against the manifest.

    files = fetch_people_dags(".cache/dagcheck/people")     # {package: PeopleFiles}, sha256-verified
    examples = people_examples(files)                      # [Example(name="people/<pkg>/<file>", ...)]

Each DAG file comes with its package's own modules (`support`): the real DagBag sees them beside the DAG file,
as it would in a deployment where the package is installed, so that a file whose only foreign import is its
own package is judged on its code, not on the ground-truth environment's package list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path, PurePosixPath

from airflow_net.dagcheck.corpus import Example
from airflow_net.utils import UserError

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("data") / "people_dags.json"
# Paths inside a distribution that hold DAG files (not the package's library code).
DAG_DIR_RE = re.compile(r"(^|/)(example_dags|examples?|dags|demo_dags)/")
DAG_CALL_RE = re.compile(r"\bDAG\(|@dag\b|\bdag\(")
AIRFLOW_IMPORT_RE = re.compile(r"^\s*(from airflow[\w.]* import|import airflow)", re.M)
# Folders of a distribution that are never the package's importable code.
NOT_SUPPORT = {"tests", "test", "docs", "examples", "example", "dags", "scripts", "dev"}


@dataclass
class PeopleFiles:
    package: str
    version: str
    licence: str
    dags: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (source, written for)
    support: dict[str, bytes] = field(default_factory=dict)  # import-relative path -> bytes


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def written_for(source: str) -> int:
    """Airflow 3 if the file uses Airflow 3's own namespaces (the Task SDK, the standard provider), else 2."""
    return 3 if re.search(r"\bairflow\.(sdk|providers\.standard)\b", source) else 2


def is_dag_file(path: str, source: str) -> bool:
    """A file under a DAG folder of the distribution that imports Airflow and builds a DAG."""
    return (path.endswith(".py") and bool(DAG_DIR_RE.search(path)) and not path.endswith("__init__.py")
            and bool(AIRFLOW_IMPORT_RE.search(source)) and bool(DAG_CALL_RE.search(source)))


def read_archive(path: Path) -> dict[str, bytes]:
    """Every regular file of a wheel or an sdist (.tar.gz), by its path inside the archive."""
    out: dict[str, bytes] = {}
    if path.suffix == ".whl" or path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.is_dir():
                    out[info.filename] = z.read(info)
    elif path.name.endswith(".tar.gz"):
        with tarfile.open(path) as t:
            for m in t.getmembers():
                f = t.extractfile(m) if m.isfile() else None
                if f is not None:
                    out[m.name] = f.read()
    else:
        raise UserError(f"{path}: expected a wheel (.whl) or an sdist (.tar.gz)")
    return out


def licence_of(files: dict[str, bytes]) -> str:
    """The licence the distribution's metadata states: License-Expression, else the License field when it is
    one short line, else the OSI classifiers; "unknown" when none is stated."""
    meta_name = next((n for n in files if n.endswith(".dist-info/METADATA")), None) or min(
        (n for n in files if n.endswith("PKG-INFO")), key=len, default=None)
    if meta_name is None:
        return "unknown"
    msg = Parser().parsestr(files[meta_name].decode("utf-8", "replace"), headersonly=True)
    if msg.get("License-Expression"):
        return msg["License-Expression"].strip()
    lic = (msg.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) < 60 and lic.upper() != "UNKNOWN":
        return lic
    classifiers = [c.split("::")[-1].strip() for c in msg.get_all("Classifier") or [] if c.startswith("License ::")]
    return "; ".join(classifiers) or "unknown"


def support_modules(files: dict[str, bytes]) -> dict[str, bytes]:
    """The distribution's own importable packages (top-level folders with __init__.py, found at the archive
    root, under an sdist's `<name>-<version>/` or its `src/`), by their import-relative path."""
    out: dict[str, bytes] = {}
    inits = {PurePosixPath(n).parent for n in files if n.endswith("/__init__.py")}
    for pkg in inits:
        # never a top-level `airflow` package: beside the DAG file it would shadow the real one
        if pkg.parent in inits or pkg.name in NOT_SUPPORT or pkg.name == "airflow":
            continue
        root = pkg.parent
        for n, data in files.items():
            if n.endswith(".py") and PurePosixPath(n).is_relative_to(pkg):
                out[str(PurePosixPath(n).relative_to(root))] = data
    return out


def load_manifest(path: Path = MANIFEST) -> list[dict]:
    try:
        data = json.loads(path.read_text())
        return data["packages"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: expected the people-DAG manifest (a JSON object with 'packages'): {exc}") from exc


def download(package: str, version: str, dist: str, cache: Path) -> Path:
    """The pinned distribution file from PyPI (pip download, no dependencies), cached."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / dist
    if target.is_file():
        return target
    kind = ["--only-binary", ":all:"] if dist.endswith(".whl") else ["--no-binary", ":all:"]
    log.info("downloading %s==%s (%s) into %s", package, version, dist, cache)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *kind,
                           "-q", "-d", str(cache), f"{package}=={version}"], capture_output=True, text=True)
    if not target.is_file():
        # pip normalises sdist names on some indexes: accept the same file under either spelling
        alt = [p for p in cache.iterdir() if p.name.lower().replace("-", "_") == dist.lower().replace("-", "_")]
        if alt:
            alt[0].rename(target)
    if not target.is_file():
        raise UserError(f"could not download {package}=={version} ({dist}) from PyPI: "
                        f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    return target


def fetch_people_dags(cache: str | Path, manifest: Path = MANIFEST) -> list[PeopleFiles]:
    """Download every pinned distribution, check its sha256 and each DAG file's, and return the files."""
    cache = Path(cache)
    out = []
    for entry in load_manifest(manifest):
        dist = download(entry["package"], entry["version"], entry["dist"], cache)
        if sha256(dist.read_bytes()) != entry["dist_sha256"]:
            raise UserError(f"{dist}: sha256 differs from the manifest's {entry['dist_sha256']}; "
                            f"delete it and fetch again, or rescan with tools/fetch_people_dags.py scan")
        files = read_archive(dist)
        got = PeopleFiles(entry["package"], entry["version"], entry["licence"], support=support_modules(files))
        for f in entry["files"]:
            data = files.get(f["path"])
            if data is None or sha256(data) != f["sha256"]:
                raise UserError(f"{dist.name}:{f['path']}: missing or not the file the manifest pins (sha256 "
                                f"{f['sha256']})")
            got.dags[f["path"]] = (data.decode("utf-8"), int(f["written_for"]))
        out.append(got)
    return out


def people_examples(packages: list[PeopleFiles]) -> list[Example]:
    """One Example per DAG file, named people/<package>/<file name>, sorted by name."""
    out = []
    for p in packages:
        for path, (source, major) in p.dags.items():
            out.append(Example(f"people/{p.package}/{PurePosixPath(path).name}", source, major,
                               support=p.support))
    return sorted(out, key=lambda e: e.name)


def scan(dist: Path) -> dict:
    """A manifest entry for one downloaded distribution: every DAG file in it (see is_dag_file)."""
    files = read_archive(dist)
    dags = []
    for n, data in sorted(files.items()):
        try:
            src = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if is_dag_file(n, src):
            dags.append({"path": n, "sha256": sha256(data), "written_for": written_for(src)})
    return {"dist": dist.name, "dist_sha256": sha256(dist.read_bytes()), "licence": licence_of(files), "files": dags}

