"""Restoring a results bundle under this config: which of its runs and files it accepts, from where, and the record.

Config keys restore (a path or an https:// URL), restore_sha256 and restore_shared_runs; the record (MARKER) lets the
next parse skip the bundle. Runs when the Snakefile is parsed: no numpy, pandas or TensorFlow."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tarfile
import tempfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import download, restored_files
from .atomic import write_text_atomic
from .bundle import CONFIG, BundleError, file_sha256, json_roundtrip, problem_lines, verify_bundle
from .bundle_contents import BUNDLE_KEYS, bundled_files
from .plan import Plan
from .quoting import shown
from .staging import conflicts, stage_and_place

MARKER = "results/bundle/restored.json"  # what was restored from which bundle, so a second parse needs no unpacking


def run_differences(bundle_runs: dict[str, dict], planned: dict[str, dict]) -> list[str]:
    """One line per run that the bundle's config and this config plan differently (absent from one, or with other
    values), sorted by run id."""
    planned = json_roundtrip(planned)
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
        mine, theirs = json_roundtrip(config.get(key)), bundle_config.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            keys += config_differences(theirs, mine, f"{prefix}{key}.")
        elif mine != theirs:
            keys.append(prefix + key)
    return keys


def external_advice(bundle_runs: dict[str, dict], planned: dict[str, dict]) -> str:
    """For a refusal whose only difference is this config's runs on datasets the bundle has none of (a bundle built
    with external=False, restored with external: true), the sentence that names --config external=False; else ''."""
    planned = json_roundtrip(planned)
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
    planned_json = json_roundtrip(planned)
    alike = {run for run, values in manifest["runs"].items() if planned_json.get(run) == values}
    if not shared:
        raise BundleError(
            f"results bundle {name} refused, nothing was restored: it was made with a config that plans other runs "
            f"than this one:\n{listing}\nSet config key restore_shared_runs: true to restore the {len(alike)} runs "
            "both plan alike (the others are then trained here)." + external_advice(manifest["runs"], planned)
        )
    whole_build = set(planned_json) <= alike
    return [entry for entry in manifest["files"] if entry["run"] in alike or (entry["run"] is None and whole_build)]


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


@dataclass(frozen=True)
class Restored:
    """What a restore put in place (or found in place): the runs and the files (paths under the working folder)."""

    runs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


def restore_bundle(
    archive: Path,
    root: Path,
    planned: dict[str, dict],
    config: dict,
    allowed: dict[str, str | None],
    record: Callable[[Restored], None],
    log: Callable[[str], None],
) -> Restored:
    """Verify a bundle against its manifest, its config.json against this workflow's schema, this config's runs
    (config key restore_shared_runs) and the files its bundle may carry (`allowed`, path -> run); unpack, check and
    move its files into place under `root` and `record` the restore, all or nothing. A BundleError names each
    problem."""
    manifest, bundle_config = verify_bundle(archive, download.restore_max_bytes(config))
    refusal = f"results bundle {archive} refused, nothing was restored"
    try:
        restored_files.check_bundle_config(bundle_config)
    except restored_files.ContentError as error:
        raise BundleError(f"{refusal}: {CONFIG}: {error}") from error
    entries = select_entries(manifest, planned, bool(config.get("restore_shared_runs")), str(archive))
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


def fetch_bundle(url: str, sha256: str, folder: Path, log: Callable[[str], None], max_bytes: int) -> Path:
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
    check_sha256(url, actual, sha256)
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


def check_sha256(name: str | Path, actual: str, sha256: str) -> None:
    """Raise a BundleError naming the bundle where `actual`, its SHA-256, is not config key restore_sha256's."""
    if actual != sha256.lower():
        raise BundleError(
            f"results bundle {name}: SHA-256 {actual} is not the {sha256.lower()} of config key restore_sha256; "
            "nothing was restored"
        )


def restore_key(source: str, sha256: str | None, planned: dict[str, dict], shared: bool, archive: Path | None) -> dict:
    """What identifies a restore without reading the bundle: source, restore_sha256, the local file's (`archive`,
    None for a URL) size and modification time, the planned runs' hash and restore_shared_runs."""
    runs = hashlib.sha256(json.dumps(json_roundtrip(planned), sort_keys=True).encode()).hexdigest()
    key = {"source": source, "sha256": (sha256 or "").lower(), "runs": runs, "shared": shared}
    if archive is not None:
        stat = archive.stat()
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
    key = restore_key(source, sha256, plan.runs, shared, archive)
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
            if sha256:
                check_sha256(archive, file_sha256(archive), sha256)
            restored = restore_bundle(archive, root, plan.runs, config, allowed, record, log)
    except OSError as error:  # reading the bundle or the folder: restore_bundle has undone any writing
        raise BundleError(f"results bundle {source} refused, nothing was restored: {shown(str(error), 500)}") from error
    if missing := sorted(set(bundled_files(config, plan)) - set(restored.files)):
        log(f"not in the bundle, so built here (which may train): {', '.join(missing)}")
    return restored


def restored_pattern(restored: Restored) -> str:
    """The wildcard regex of rule restored: exactly the restored files (none at all without a restore)."""
    return "|".join(re.escape(path) for path in restored.files) or "(?!)"
