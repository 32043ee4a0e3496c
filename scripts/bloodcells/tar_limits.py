"""Bounded reading of a .tar.gz from outside: its raw headers walked and capped (metadata header size, member count,
total size) before Python's tarfile parses any of them, since tarfile reads a whole PAX or GNU long-name header into
memory first. Standard library only: it runs when the Snakefile is parsed, on a cluster's login node."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

BLOCK = 512
# A PAX or GNU long-name header of a bundle holds one path (under 200 characters) and a few numbers.
METADATA_MAX_BYTES = 64 << 10
# A bundle holds about ten files a run: 20,000 members is a study of 2,000 runs. tarfile keeps every member's
# header in memory (about 1 KB each), so the count must be bounded too.
MAX_MEMBERS = 20_000
METADATA_TYPES = {b"x": "PAX header", b"g": "PAX global header", b"L": "GNU long name", b"K": "GNU long link name"}
# GNU sparse files chain extension blocks that no size field covers; a bundle never holds one.
REFUSED_TYPES = {b"S": "GNU sparse file", b"V": "GNU volume header", b"M": "GNU multi-volume continuation"}


class TarLimitError(ValueError):
    """A tar archive over a limit, or with a header that cannot be read."""


def member_size(header: bytes) -> int:
    """The data size a raw tar header declares (octal, or GNU base-256 for 8 GiB and more)."""
    field = header[124:136]
    if field[0] & 0x80:
        if field[0] == 0xFF:
            raise TarLimitError("a negative member size")
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits or b"0", 8)
    except ValueError as error:
        raise TarLimitError(f"a size field that is not an octal number ({digits[:20]!r})") from error


def padded(size: int) -> int:
    """The bytes a member's data takes in the archive: whole 512-byte blocks."""
    return -(-size // BLOCK) * BLOCK


def check_tar_headers(archive: Path, max_bytes: int, max_members: int = MAX_MEMBERS) -> int:
    """Walk the headers of a .tar.gz without keeping any data: raise a TarLimitError naming the limit when a
    metadata header exceeds METADATA_MAX_BYTES, the members exceed `max_members` or all headers' data `max_bytes`,
    or a member is of a refused type; return the total data size. Only headers are parsed; data is skipped unread."""
    members = total = offset = 0
    try:
        with gzip.open(archive, "rb") as stream:
            while len(header := stream.read(BLOCK)) == BLOCK and header != bytes(BLOCK):
                kind, size = header[156:157], member_size(header)
                total += size
                if kind in REFUSED_TYPES:
                    raise TarLimitError(f"a {REFUSED_TYPES[kind]} at byte {offset}: a bundle holds plain files only")
                if kind in METADATA_TYPES and size > METADATA_MAX_BYTES:
                    raise TarLimitError(
                        f"a {METADATA_TYPES[kind]} of {size} bytes at byte {offset} (at most {METADATA_MAX_BYTES}: "
                        "a bundle's names are short)"
                    )
                members += kind not in METADATA_TYPES
                if members > max_members:
                    raise TarLimitError(f"more than {max_members} members")
                if total > max_bytes:
                    raise TarLimitError(f"more than {max_bytes} bytes unpacked (config key restore_max_bytes)")
                stream.seek(padded(size), 1)  # GzipFile skips by reading in small chunks: memory stays bounded
                offset += BLOCK + padded(size)
    except (OSError, EOFError, zlib.error) as error:
        raise TarLimitError(f"not a readable .tar.gz ({error})") from error
    return total
