"""Results bundles: one verified file of everything the tables, figures and report are made from, and its restore
into a working directory before the workflow is planned (config keys restore, restore_sha256, restore_shared_runs;
bundle_models). Imported when the Snakefile is parsed (on a cluster's login node): standard library and the
planning modules only, no numpy, pandas or TensorFlow."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from . import download, files, restored_files
from .atomic import atomic_path, write_text_atomic
from .plan import Plan
from .tar_limits import TarLimitError, check_tar_headers, shown

FORMAT = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
BUNDLE_FILE = "results/bundle/results-bundle.tar.gz"
MARKER = "results/bundle/restored.json"  # what was restored from which bundle, so a second parse needs no unpacking
PROVENANCE = "results/report/provenance.json"
# Only files under these folders of the working directory are bundled, and restored.
ROOTS = ("results", "benchmarks")
RUN_FILES = ("metrics.json", "predictions.npz", "history.csv", "bootstrap.json", "host.json")
GRADCAM_FILES = ("panel.png", "panel.pdf", "heatmaps.npz", "focus.csv")
TRANSFER_FILES = ("predictions.npz", "metrics.json")
# Config keys of bundles and restores: they say how results are packed and where they come from, not how they were
# made, so they are left out of the config a bundle records and of the config hash in the provenance.
BUNDLE_KEYS = ("bundle_models", "restore", "restore_sha256", "restore_shared_runs", "restore_max_bytes")
CHUNK_BYTES = 1 << 20
MANIFEST_MAX_BYTES = 16 << 20  # the full study's manifest is about 100 kB
PROBLEMS_SHOWN = 30
STAGING_PREFIX = ".restore-staging-"


class BundleError(ValueError):
    """A bundle that cannot be made or restored: the message names the bundle and each file or key at fault."""


# --- what a bundle holds ----------------------------------------------------------------------------


def bundled_files(config: dict, plan: Plan, models: bool = False) -> dict[str, str | None]:
    """Every file a bundle of this plan holds (what no job can rebuild without a model or the data), sorted:
    path -> the run it belongs to, or None for the files of the whole build (montage, provenance)."""
    names = RUN_FILES + (("model.keras",) if models else ())
    paths = {path: run for run in plan.runs for path in files.run_files([run], *names)}
    paths |= {path: run for run in plan.runs for path in files.benchmark_files("train", [run])}
    paths |= {path: run for run in plan.runs for path in files.benchmark_files("evaluate", [run])}
    paths |= {path: run for run in plan.gradcam for path in files.gradcam_files([run], *GRADCAM_FILES)}
    paths |= {path: run for run in plan.gradcam for path in files.benchmark_files("gradcam", [run])}
    if config.get("transfer"):
        target = config["transfer"]["to"]
        for run in plan.studies["transfer_source"]:
            paths |= {path: run for path in files.transfer_files([run], target, *TRANSFER_FILES)}
            paths |= {path: run for path in files.benchmark_files("transfer", [f"{run}_{target}"])}
    paths |= {files.montage_file(config["dataset"]): None, PROVENANCE: None}
    return dict(sorted(paths.items()))


def results_config(config: dict) -> dict:
    """The config without the keys of bundles and restores: what a bundle records and the provenance hashes."""
    return {key: value for key, value in config.items() if key not in BUNDLE_KEYS}


def plain(value):
    """`value` as JSON gives it back (tuples as lists, keys as strings), so planned runs compare with a manifest's."""
    return json.loads(json.dumps(value, default=str))


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        "runs": plain(runs),
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


class _HashingReader:
    """A file's reader that hashes (SHA-256) what it hands out, as tarfile copies it into the archive."""

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
                    reader = _HashingReader(handle)
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
    """A regular file of a bundle's archive: its name, size and SHA-256."""

    name: str
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
    for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
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
                members[member.name] = Member(member.name, member.size, sha256)
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
        restored_files.check_bundle_config(config)
    except restored_files.ContentError as error:
        raise BundleError(f"results bundle {archive} refused, nothing was restored: {CONFIG}: {error}") from error
    return manifest, config


# --- the bundle against this config -----------------------------------------------------------------


def run_differences(bundle_runs: dict[str, dict], planned: dict[str, dict]) -> list[str]:
    """One line per run that the bundle's config and this config plan differently (absent from one, or with other
    values), sorted by run id."""
    planned = plain(planned)
    lines = []
    for run in sorted(set(bundle_runs) | set(planned)):
        if run not in planned:
            lines.append(f"{run}: in the bundle, not planned by this config")
        elif run not in bundle_runs:
            lines.append(f"{run}: planned by this config, not in the bundle")
        elif bundle_runs[run] != planned[run]:
            keys = sorted(
                k for k in set(bundle_runs[run]) | set(planned[run]) if bundle_runs[run].get(k) != planned[run].get(k)
            )
            lines.append(f"{run}: other values of {', '.join(keys)}")
    return lines


def config_differences(bundle_config: dict, config: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between the bundle's config and this one (those of bundles left out)."""
    keys = []
    for key in sorted(set(bundle_config) | set(config)):
        if not prefix and key in BUNDLE_KEYS:
            continue
        mine, theirs = plain(config.get(key)), bundle_config.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            keys += config_differences(theirs, mine, f"{prefix}{key}.")
        elif mine != theirs:
            keys.append(prefix + key)
    return keys


def external_advice(bundle_runs: dict[str, dict], planned: dict[str, dict]) -> str:
    """For a refusal whose only difference is this config's runs on datasets the bundle has none of (a bundle built
    with external=False, restored with external: true), the sentence that names --config external=False; else ''."""
    planned = plain(planned)
    missing, extra = set(planned) - set(bundle_runs), set(bundle_runs) - set(planned)
    datasets = {values["dataset"] for values in bundle_runs.values()}
    differ = any(planned[run] != bundle_runs[run] for run in set(planned) & set(bundle_runs))
    if not missing or extra or differ or any(planned[run]["dataset"] in datasets for run in missing):
        return ""
    others = ", ".join(sorted({planned[run]["dataset"] for run in missing}))
    return (
        f"\nThe runs this config adds are all on other datasets ({others}): the bundle was built with external=False. "
        "Add --config external=False to this command to restore it whole and train nothing."
    )


def select_entries(manifest: dict, planned: dict[str, dict], shared: bool, name: str) -> list[dict]:
    """The manifest's entries to restore: all of them where both configs plan the same runs; where they differ,
    a BundleError listing the runs (or, with `shared`, the files of the runs both plan alike, and the build's files
    only if this config plans no other run)."""
    differences = run_differences(manifest["runs"], planned)
    if not differences:
        return list(manifest["files"])
    listing = "\n".join(f"  {line}" for line in differences)
    plain_planned = plain(planned)
    alike = {run for run, values in manifest["runs"].items() if plain_planned.get(run) == values}
    if not shared:
        raise BundleError(
            f"results bundle {name} refused, nothing was restored: it was made with a config that plans other runs "
            f"than this one:\n{listing}\nSet config key restore_shared_runs: true to restore the {len(alike)} runs "
            "both plan alike (the others are then trained here)." + external_advice(manifest["runs"], planned)
        )
    whole_build = set(plain_planned) <= alike
    return [entry for entry in manifest["files"] if entry["run"] in alike or (entry["run"] is None and whole_build)]


def conflicts(entries: Iterable[dict], root: Path) -> tuple[list[dict], list[str]]:
    """The entries to write (absent from `root`) and one line per file already there with other content, or in the
    way of one (a file where a folder goes, a link); files already there with the bundle's content are left alone."""
    to_write, problems = [], []
    for entry in entries:
        dest = root / entry["path"]
        # a folder may be a link (results/ on a scratch disk); a file or a dangling link where one goes blocks it
        folders = [root / parent for parent in reversed(PurePosixPath(entry["path"]).parents) if str(parent) != "."]
        blocked = next((f for f in folders if (f.exists() or f.is_symlink()) and not f.is_dir()), None)
        if blocked is not None:
            problems.append(f"{entry['path']}: {blocked} is in the way (not a folder)")
        elif dest.is_symlink() or (dest.exists() and not dest.is_file()):
            problems.append(f"{entry['path']}: already there and not a regular file")
        elif not dest.exists():
            to_write.append(entry)
        elif (sha256 := file_sha256(dest)) != entry["sha256"]:
            problems.append(f"{entry['path']}: already there with other content (SHA-256 {sha256})")
    return to_write, problems


def name_problems(entries: Iterable[dict], allowed: dict[str, str | None]) -> list[str]:
    """One line per entry to restore that `snakemake bundle` would not pack for this config (any other path, the
    restore marker), or whose run is not the run its path belongs to."""
    problems = []
    for entry in entries:
        path, run = entry["path"], entry["run"]
        if path not in allowed:
            problems.append(f"{shown(path)}: not a file that a results bundle of this config carries")
        elif allowed[path] != run:
            problems.append(f"{shown(path)}: a file of run {allowed[path]}, listed as one of {shown(str(run))}")
    return problems


def extract(archive: Path, entries: list[dict], stage: Path, mtime: float) -> None:
    """Write the entries' files from the archive under `stage`, each SHA-256 checked again as it is written, all
    with one modification time (so no restored file looks newer than another to Snakemake)."""
    wanted = {entry["path"]: entry for entry in entries}
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar:
            entry = wanted.pop(member.name, None)
            if entry is None or not member.isreg():
                continue
            dest = stage / entry["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with tar.extractfile(member) as source, open(dest, "wb") as out:
                for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry["sha256"]:
                raise BundleError(f"{shown(entry['path'])} changed since the bundle was verified")
            os.utime(dest, (mtime, mtime))
    if wanted:
        raise BundleError(f"{shown(next(iter(wanted)))} vanished from the bundle since it was verified")


def place(stage: Path, paths: list[str], root: Path, commit: Callable[[], None]) -> None:
    """Move the staged files into place under `root`, then `commit` (record the restore): all or none. On any
    failure the files and folders placed so far are removed again before the error is raised."""
    placed: list[Path] = []
    made: list[Path] = []
    try:
        for path in paths:
            dest = root / path
            for folder in [root / parent for parent in reversed(PurePosixPath(path).parents) if str(parent) != "."]:
                if not folder.is_dir():
                    folder.mkdir()
                    made.append(folder)
            if dest.exists() or dest.is_symlink():
                raise BundleError(f"{shown(path)} appeared in the working folder while the bundle was restored")
            try:
                os.replace(stage / path, dest)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                shutil.copy2(stage / path, dest)  # results/ is a link to another disk: copy, keeping the mtime
            placed.append(dest)
        commit()
    except BaseException:
        for dest in reversed(placed):
            dest.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


# --- restoring ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    """What a restore put in place (or found in place): the runs and the files (paths under the working folder)."""

    runs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


def stage_and_place(
    archive: Path,
    to_write: list[dict],
    root: Path,
    check: Callable[[Path, list[str]], list[str]],
    commit: Callable[[], None],
) -> None:
    """Unpack the entries to write into a staging folder beside results/, `check` their content there (problems,
    one line each), move them into place and `commit`: on any failure nothing is left in place."""
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    paths = [entry["path"] for entry in to_write]
    try:
        extract(archive, to_write, stage, time.time())
        if problems := check(stage, paths):
            raise BundleError("files whose content is not what the workflow writes:\n" + problem_lines(problems))
        place(stage, paths, root, commit)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def restore_bundle(
    archive: Path,
    root: Path,
    planned: dict[str, dict],
    config: dict,
    allowed: dict[str, str | None],
    record: Callable[[Restored], None],
    log: Callable[[str], None],
) -> Restored:
    """Verify a bundle against its manifest, this config's runs (config key restore_shared_runs) and the files its
    bundle may carry (`allowed`, path -> run); unpack, check and move its files into place under `root` and
    `record` the restore, all or nothing. A BundleError names each problem."""
    manifest, bundle_config = verify_bundle(archive, download.restore_max_bytes(config))
    entries = select_entries(manifest, planned, bool(config.get("restore_shared_runs")), str(archive))
    refusal = f"results bundle {archive} refused, nothing was restored"
    if problems := name_problems(entries, allowed):
        raise BundleError(f"{refusal}: it holds files no bundle of this config carries:\n" + problem_lines(problems))
    if problems := restored_files.size_problems(entries):
        raise BundleError(f"{refusal}: it holds files larger than the workflow writes:\n" + problem_lines(problems))
    to_write, problems = conflicts(entries, root)
    if problems:
        raise BundleError(
            f"{refusal}: it would overwrite files of {root}:\n"
            + problem_lines(problems)
            + "\nMove them away, or restore into a fresh working directory (snakemake --directory)."
        )
    runs = tuple(sorted({entry["run"] for entry in entries} - {None}))
    restored = Restored(runs, tuple(entry["path"] for entry in entries))
    try:
        stage_and_place(
            archive,
            to_write,
            root,
            lambda stage, paths: restored_files.content_problems(stage, paths, config, planned),
            lambda: record(restored),
        )
    except BundleError as error:
        raise BundleError(f"{refusal}: {error}") from error
    except (OSError, tarfile.TarError, EOFError, zlib.error) as error:
        raise BundleError(f"{refusal}: {shown(str(error), 500)}") from error
    git = manifest["git"]
    log(
        f"results bundle {archive} (made {manifest['created_utc']} at commit {git['commit']}): "
        f"{len(to_write)} files restored, {len(entries) - len(to_write)} already in place, {len(runs)} runs"
    )
    if differences := run_differences(manifest["runs"], planned):
        log("runs the two configs plan differently, not restored (restore_shared_runs):\n" + "\n".join(differences))
    if differing := config_differences(bundle_config, config):
        log(f"the bundle's results were made with other values of config keys: {', '.join(differing)}")
    return restored


def is_url(source: str) -> bool:
    """Whether a restore source is a URL (else a local path)."""
    return urllib.parse.urlsplit(source).scheme in ("http", "https", "ftp", "file")


def fetch_bundle(
    url: str, sha256: str, folder: Path, log: Callable[[str], None], max_bytes: int = download.MAX_BYTES
) -> Path:
    """Download a bundle into `folder` (a temporary one) and return it, only if its SHA-256 is `sha256`; a redirect
    to another host or scheme, more than `max_bytes` or a stalled server refuses it (download.stream_to)."""
    dest = folder / (Path(urllib.parse.urlsplit(url).path).name or "results-bundle.tar.gz")
    log(f"downloading results bundle {url}")
    try:
        actual = download.stream_to(url, dest, algorithm="sha256", log=log, max_bytes=max_bytes)
    except download.DownloadTooLarge as error:
        raise BundleError(f"config key restore: {error}; config key restore_max_bytes sets the limit") from error
    except (download.DownloadError, ValueError) as error:
        raise BundleError(f"config key restore: {error}") from error
    if actual != sha256.lower():
        raise BundleError(
            f"results bundle {url}: SHA-256 {actual} is not the {sha256.lower()} of config key restore_sha256; "
            "nothing was restored"
        )
    return dest


def local_bundle(source: str, root: Path) -> Path:
    """The bundle file config key restore names (relative to the working directory); a BundleError if absent."""
    archive = root / Path(source).expanduser()
    if not archive.is_file():
        raise BundleError(
            f"config key restore: results bundle {archive} does not exist (a relative path is read from the working "
            "directory, snakemake --directory)"
        )
    return archive


def check_sha256(archive: Path, sha256: str | None) -> None:
    """Raise a BundleError naming the bundle where restore_sha256 is given and is not the file's SHA-256."""
    if sha256 and (actual := file_sha256(archive)) != sha256.lower():
        raise BundleError(
            f"results bundle {archive}: SHA-256 {actual} is not the {sha256.lower()} of config key restore_sha256; "
            "nothing was restored"
        )


def restore_key(source: str, sha256: str | None, planned: dict[str, dict], shared: bool, root: Path) -> dict:
    """What identifies a restore without reading the bundle: source, restore_sha256, a local file's size and
    modification time, the planned runs' hash and restore_shared_runs."""
    runs = hashlib.sha256(json.dumps(plain(planned), sort_keys=True).encode()).hexdigest()
    key = {"source": source, "sha256": (sha256 or "").lower(), "runs": runs, "shared": shared}
    if not is_url(source):
        stat = local_bundle(source, root).stat()
        key |= {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return key


def already_restored(key: dict, root: Path, allowed: dict[str, str | None]) -> Restored | None:
    """The earlier restore recorded in MARKER under the same key, if every file it restored is one a bundle of this
    config carries (`allowed`) and still in place with its size; None otherwise (then the bundle is verified and
    restored again)."""
    try:
        marker = json.loads((root / MARKER).read_text())
        if marker["key"] != key or not set(marker["files"]) <= set(allowed):
            return None
        if all(
            (root / path).is_file() and (root / path).stat().st_size == size for path, size in marker["files"].items()
        ):
            return Restored(tuple(marker["runs"]), tuple(marker["files"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


def recorded_restore(root: Path, log: Callable[[str], None], allowed: dict[str, str | None]) -> Restored:
    """The runs and files of the restore recorded in MARKER (whichever bundle), or nothing where none is. Only files
    a bundle of this config carries (`allowed`) stand for their jobs: any other would make rule restored compete
    with the rule that makes it."""
    try:
        marker = json.loads((root / MARKER).read_text())
        files = [path for path in marker["files"] if path in allowed]
        restored = Restored(tuple(marker["runs"]), tuple(files))
    except FileNotFoundError:
        return Restored()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BundleError(f"{root / MARKER}: not a record of a restore ({error}); delete it to build here") from error
    if ignored := len(marker["files"]) - len(files):
        log(f"{MARKER}: {ignored} recorded files are not results a bundle of this config carries; ignored")
    log(f"{len(restored.files)} files restored from a results bundle ({MARKER}) stand for the jobs that made them")
    return restored


def record_restore(key: dict, restored: Restored, root: Path) -> None:
    """Write MARKER: the restore's key, the restored runs and each restored file's size."""
    sizes = {path: (root / path).stat().st_size for path in restored.files}
    write_text_atomic(root / MARKER, json.dumps({"key": key, "runs": list(restored.runs), "files": sizes}, indent=1))


def restore_configured(config: dict, plan: Plan, root: Path, log: Callable[[str], None] = print) -> Restored:
    """The parse-time hook: restore the bundle named by config key restore (a path, or a URL with restore_sha256)
    into `root` before the workflow is planned. Without the key, the files of an earlier restore recorded in MARKER
    still stand for their jobs (commands that leave the key out must not retrain what was restored)."""
    source, sha256 = config.get("restore"), config.get("restore_sha256")
    allowed = bundled_files(config, plan, models=True)
    if not source:
        return recorded_restore(root, log, allowed)
    url = is_url(source)
    if url and urllib.parse.urlsplit(source).scheme not in ("http", "https"):
        raise BundleError(f"config key restore: {source} is neither a local path nor an https:// URL")
    if url and not sha256:
        raise BundleError(f"config key restore_sha256: needed with a URL in config key restore ({source})")
    archive = None if url else local_bundle(source, root)
    shared = bool(config.get("restore_shared_runs", False))
    key = restore_key(source, sha256, plan.runs, shared, root)
    # A second parse (the next snakemake command, a cluster job) finds the files in place and reads no bundle.
    if (done := already_restored(key, root, allowed)) is not None:
        return done
    record = functools.partial(record_restore, key, root=root)
    try:
        if url:
            with tempfile.TemporaryDirectory(prefix="results-bundle-") as folder:
                archive = fetch_bundle(source, sha256, Path(folder), log, download.restore_max_bytes(config))
                restored = restore_bundle(archive, root, plan.runs, config, allowed, record, log)
        else:
            check_sha256(archive, sha256)
            restored = restore_bundle(archive, root, plan.runs, config, allowed, record, log)
    except OSError as error:  # reading the bundle or the folder: restore_bundle has undone any writing
        raise BundleError(f"results bundle {source} refused, nothing was restored: {shown(str(error), 500)}") from error
    if missing := sorted(set(bundled_files(config, plan)) - set(restored.files)):
        log(f"not in the bundle, so built here (which may train): {', '.join(missing)}")
    return restored


def restored_pattern(restored: Restored) -> str:
    """The wildcard regex of rule restored: exactly the restored files (none at all without a restore)."""
    return "|".join(re.escape(path) for path in restored.files) or "(?!)"
