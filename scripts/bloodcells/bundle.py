"""The results bundle's archive and its integrity: the manifest, writing the .tar.gz, verifying it before any write.

It needs no workflow config (bloodcells.restoring decides what a config accepts). Imported when the Snakefile is
parsed (on a cluster's login node): no numpy, pandas or TensorFlow."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from . import download, restored_files
from .atomic import atomic_path
from .quoting import shown
from .tar_limits import TarLimitError, check_tar_headers

FORMAT = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
BUNDLE_FILE = "results/bundle/results-bundle.tar.gz"
# Only files under these folders of the working directory are bundled, and restored.
ROOTS = ("results", "benchmarks")
MANIFEST_MAX_BYTES = 16 << 20  # the full study's manifest is about 100 kB
PROBLEMS_SHOWN = 30


class BundleError(ValueError):
    """A bundle that cannot be made or restored: the message names the bundle and each file or key at fault."""


def json_roundtrip(value: Any) -> Any:
    """`value` as JSON gives it back (tuples as lists, keys as strings), so planned runs compare with a manifest's."""
    return json.loads(json.dumps(value, default=str))


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# --- making a bundle --------------------------------------------------------------------------------


def make_manifest(
    entries: list[dict], runs: dict[str, dict], config_bytes: bytes, git: dict, models: bool, created: str
) -> dict:
    """The manifest: format, creation time, the workflow's git state, the planned runs, the config's SHA-256 and
    each file's path, size, SHA-256 and run."""
    return {
        "format": FORMAT,
        "created_utc": created,
        "git": git,
        "models": models,
        "runs": json_roundtrip(runs),
        "config": {"path": CONFIG, "sha256": hashlib.sha256(config_bytes).hexdigest()},
        "files": entries,
    }


def file_entries(paths: dict[str, str | None], root: Path) -> list[dict]:
    """Path, size, SHA-256 and run of each file to bundle; a missing file is named in a BundleError."""
    missing = [path for path in paths if not (root / path).is_file()]
    if missing:
        raise BundleError("cannot bundle: these files are missing:\n" + "\n".join(f"  {path}" for path in missing))
    return [
        {"path": path, "bytes": (root / path).stat().st_size, "sha256": file_sha256(root / path), "run": run}
        for path, run in paths.items()
    ]


def _tar_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    """A plain file's tar header that says nothing about the machine it was made on (owner, group, mode)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class HashingReader:
    """A file's reader that hashes (SHA-256) what it hands out, as it is copied (into the archive, out of it)."""

    def __init__(self, handle) -> None:
        self.handle, self.digest = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        """The next bytes of the file, hashed on the way."""
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def write_bundle(
    dest: str | os.PathLike,
    root: Path,
    paths: dict[str, str | None],
    runs: dict[str, dict],
    config: dict,
    git: dict,
    models: bool,
) -> dict:
    """Write the bundle of `paths` (relative to `root`) to `dest` atomically: manifest.json first, then config.json
    and the files; return the manifest."""
    for path in paths:
        if reason := unsafe_path(path):
            raise BundleError(f"cannot bundle {path}: {reason}")
    config_bytes = (json.dumps(config, indent=1, sort_keys=True, default=str) + "\n").encode()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = make_manifest(file_entries(paths, root), runs, config_bytes, git, models, created)
    manifest_bytes = (json.dumps(manifest, indent=1) + "\n").encode()
    now = time.time()
    with atomic_path(dest) as tmp:
        with tarfile.open(tmp, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            for name, data in ((MANIFEST, manifest_bytes), (CONFIG, config_bytes)):
                tar.addfile(_tar_info(name, len(data), now), io.BytesIO(data))
            for entry in manifest["files"]:
                source = root / entry["path"]
                with open(source, "rb") as handle:
                    reader = HashingReader(handle)
                    tar.addfile(_tar_info(entry["path"], entry["bytes"], source.stat().st_mtime), reader)
                # a file rewritten after it was hashed would make a bundle that its own manifest refuses
                if reader.digest.hexdigest() != entry["sha256"]:
                    raise BundleError(f"cannot bundle {entry['path']}: it changed while the bundle was written")
    return manifest


# --- checking a bundle ------------------------------------------------------------------------------


def unsafe_path(name: str) -> str | None:
    """Why a bundle's file name may not be restored (absolute, escaping, not under results/ or benchmarks/);
    None when it is safe."""
    if not name or "\\" in name or "\x00" in name:
        return "not a plain relative path"
    path = PurePosixPath(name)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "a path that escapes the results folder ('..', '.' or an empty part)"
    if path.parts[0] not in ROOTS or len(path.parts) < 2:
        return f"outside the folders a bundle restores ({', '.join(root + '/' for root in ROOTS)})"
    return None


@dataclass(frozen=True)
class Member:
    """A regular file of a bundle's archive: its size and SHA-256."""

    size: int
    sha256: str


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why an archive member is refused whatever the manifest says (links, devices, unsafe names); None if fine."""
    if member.issym():
        return f"a symbolic link (to {shown(member.linkname)})"
    if member.islnk():
        return f"a hard link (to {shown(member.linkname)})"
    if not (member.isreg() or member.isdir()):
        return "not a regular file"
    if member.name in (MANIFEST, CONFIG) and member.isreg():
        return None
    return unsafe_path(member.name)


def _hash_stream(handle, limit: int | None = None) -> tuple[str, bytes | None]:
    """SHA-256 of what `handle` gives; the bytes too when there are at most `limit` of them (else None)."""
    digest, kept, size = hashlib.sha256(), [], 0
    for chunk in iter(lambda: handle.read(download.CHUNK_BYTES), b""):
        digest.update(chunk)
        size += len(chunk)
        if limit is not None and size <= limit:
            kept.append(chunk)
    return digest.hexdigest(), (b"".join(kept) if limit is not None and size <= limit else None)


def scan_archive(archive: Path) -> tuple[dict[str, Member], dict[str, bytes], list[str]]:
    """Read a bundle once without writing anything: its regular files (name -> Member), the bytes of manifest.json
    and config.json, and the problems of its members (links, unsafe names, repeats), each naming the member."""
    members: dict[str, Member] = {}
    small: dict[str, bytes] = {}
    problems: list[str] = []
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                if problem := _member_problem(member):
                    problems.append(f"{shown(member.name)}: {problem}")
                    continue
                if member.isdir():
                    continue  # folders are made as files need them; an entry for one carries nothing
                if member.name in members:
                    problems.append(f"{shown(member.name)}: in the archive twice")
                    continue
                keep = MANIFEST_MAX_BYTES if member.name in (MANIFEST, CONFIG) else None
                sha256, data = _hash_stream(tar.extractfile(member), keep)
                members[member.name] = Member(member.size, sha256)
                if data is not None:
                    small[member.name] = data
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise BundleError(f"results bundle {archive}: not a readable .tar.gz bundle ({error})") from error
    return members, small, problems


def load_manifest(data: bytes | None) -> dict:
    """The manifest from its bytes, every field's type checked (rules/schema/bundle.schema.yaml); a BundleError
    names the field at fault."""
    if data is None:
        raise BundleError(f"{MANIFEST}: missing (or larger than {MANIFEST_MAX_BYTES} bytes)")
    try:
        return restored_files.checked_json(data, "manifest")
    except restored_files.ContentError as error:
        raise BundleError(f"{MANIFEST}: {error}") from error


def manifest_problems(manifest: dict, members: dict[str, Member]) -> list[str]:
    """Where the archive's files and the manifest disagree, one line per file: unsafe or repeated paths, missing,
    extra or changed files, and the config's hash."""
    problems, listed = [], set()
    for entry in manifest["files"]:
        path = entry["path"]
        if reason := unsafe_path(path):
            problems.append(f"{shown(path)}: {reason}")
        elif path in listed:
            problems.append(f"{shown(path)}: listed twice in the manifest")
        elif path not in members:
            problems.append(f"{shown(path)}: in the manifest but missing from the archive")
        elif members[path].sha256 != entry["sha256"] or members[path].size != entry["bytes"]:
            problems.append(
                f"{shown(path)}: SHA-256 {members[path].sha256} ({members[path].size} bytes) is not the manifest's "
                f"{entry['sha256']} ({entry['bytes']} bytes)"
            )
        listed.add(path)
    if CONFIG not in members:
        problems.append(f"{CONFIG}: missing from the archive")
    elif members[CONFIG].sha256 != manifest["config"]["sha256"]:
        problems.append(
            f"{CONFIG}: SHA-256 {members[CONFIG].sha256} is not the manifest's {manifest['config']['sha256']}"
        )
    extra = sorted(set(members) - listed - {MANIFEST, CONFIG})
    problems += [f"{shown(name)}: in the archive but not in the manifest" for name in extra]
    return problems


def problem_lines(problems: list[str]) -> str:
    """The problems of a bundle as indented lines, each once, at most PROBLEMS_SHOWN of them."""
    unique = list(dict.fromkeys(problems))  # a bad name may be both member and entry
    more = [f"... and {len(unique) - PROBLEMS_SHOWN} more"] if len(unique) > PROBLEMS_SHOWN else []
    return "\n".join(f"  {line}" for line in unique[:PROBLEMS_SHOWN] + more)


def verify_bundle(archive: Path, max_bytes: int = download.MAX_BYTES) -> tuple[dict, dict]:
    """The manifest and config of a bundle whose every file matches its manifest; otherwise a BundleError naming
    each file that does not. Its raw headers are bounded first (tar_limits); nothing is written."""
    try:
        check_tar_headers(archive, max_bytes)
    except TarLimitError as error:
        raise BundleError(f"results bundle {archive} refused, nothing was restored: {error}") from error
    members, small, problems = scan_archive(archive)
    try:
        manifest = load_manifest(small.get(MANIFEST))
        problems += manifest_problems(manifest, members)
    except BundleError as error:
        problems.append(str(error))
    if problems:
        raise BundleError(
            f"results bundle {archive} refused, nothing was restored: it does not match its manifest:\n"
            + problem_lines(problems)
        )
    try:
        config = restored_files.checked_json(small.get(CONFIG, b""), "bundle_config")
    except restored_files.ContentError as error:
        raise BundleError(f"results bundle {archive} refused, nothing was restored: {CONFIG}: {error}") from error
    return manifest, config
