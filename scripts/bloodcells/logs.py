"""Send a script's output to its Snakemake log file."""

from __future__ import annotations

import sys
from pathlib import Path


def log_to_file(path: str | None) -> None:
    """Redirect stdout and stderr, line-buffered, to the rule's log file (keeps Keras progress in the log)."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a", buffering=1)
    sys.stdout = sys.stderr = handle
