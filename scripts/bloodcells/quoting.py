"""Text from outside (a member's name, a URL a server chose, a parser's error) as an error message shows it."""

from __future__ import annotations

SHOWN_CHARS = 200


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` escaped to printable ASCII and cut to its first `limit` characters, with its length where it is longer."""
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")  # no control characters in messages
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
