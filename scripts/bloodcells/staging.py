"""Putting a verified bundle's files in place, all or none: unpacked beside results/, moved, undone on any failure."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from .bundle import BundleError, HashingReader, file_sha256, problem_lines
from .quoting import shown

STAGING_PREFIX = ".restore-staging-"


def folders(path: str, root: Path) -> list[Path]:
    """The folders under `root` that hold `path`, outermost first."""
    return [root / parent for parent in reversed(PurePosixPath(path).parents) if str(parent) != "."]


def conflicts(entries: Iterable[dict], root: Path) -> tuple[list[dict], list[str]]:
    """The entries to write (absent from `root`) and one line per file already there with other content, or in the
    way of one (a file where a folder goes, a link); files already there with the bundle's content are left alone."""
    to_write, problems = [], []
    for entry in entries:
        dest = root / entry["path"]
        # a folder may be a link (results/ on a scratch disk); a file or a dangling link where one goes blocks it
        blocked = next(
            (f for f in folders(entry["path"], root) if (f.exists() or f.is_symlink()) and not f.is_dir()), None
        )
        if blocked is not None:
            problems.append(f"{entry['path']}: {blocked} is in the way (not a folder)")
        elif dest.is_symlink() or (dest.exists() and not dest.is_file()):
            problems.append(f"{entry['path']}: already there and not a regular file")
        elif not dest.exists():
            to_write.append(entry)
        elif (sha256 := file_sha256(dest)) != entry["sha256"]:
            problems.append(f"{entry['path']}: already there with other content (SHA-256 {sha256})")
    return to_write, problems


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
            with tar.extractfile(member) as source, open(dest, "wb") as out:
                reader = HashingReader(source)
                shutil.copyfileobj(reader, out)
            if reader.digest.hexdigest() != entry["sha256"]:
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
            for folder in folders(path, root):
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
