"""Write files so that a reader never sees a half-written result."""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path that is renamed onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends with the final name, so writers that check extensions (Keras) accept it.
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", suffix="-" + final.name, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, final)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise OSError(error.errno, f"no space left on device while writing {final}") from error
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    """The process umask (reading it requires setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(final: str | os.PathLike, text: str) -> None:
    """Write `text` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def rows_csv(rows: list[dict]) -> str:
    """Rows as CSV text, one column per key in order of first appearance (a key some rows lack stays empty there)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder that is renamed onto `final` (which must not exist) if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".part-", suffix="-" + final.name, dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700 folders
        os.rename(tmp, final)  # unlike os.replace, refuses to merge into an existing non-empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_parts(final: str | os.PathLike) -> list[Path]:
    """Delete the temporary siblings of `final` that a killed writer left behind; return them."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    # SIGKILL (or a crash of the machine) skips atomic_path's cleanup; only this file's writer uses these names.
    stale = sorted(final.parent.glob(".part-*-" + glob.escape(final.name)))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
