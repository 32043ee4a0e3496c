"""Stop with a clear message where python3 is older than 3.11, before a venv is made (README, set-up).

Snakemake 9, numpy 2.4, pandas 3 and Keras 3 need Python 3.11; on an older one pip only says "No matching
distribution". Plain syntax throughout, so that Python 2.7 and 3.6 can still run this file and print the message.
"""

import sys

MINIMUM = (3, 11)


def problem(version_info):
    """Why this Python cannot run the workflow, or None."""
    if tuple(version_info[:2]) >= MINIMUM:
        return None
    # concatenation, not an f-string or % (which ruff would rewrite): Python 2.7 and 3.6 must parse this file
    minimum, found = ".".join(map(str, MINIMUM)), ".".join(map(str, version_info[:2]))
    return (
        "This workflow needs Python " + minimum + " or newer; " + sys.executable + " is Python " + found + ". "
        "Make the venv with a newer one: on a cluster e.g. `module load python/3.11` first, elsewhere "
        "python3.11 -m venv .venv, or a conda env with python=3.11."
    )


if __name__ == "__main__":
    message = problem(sys.version_info)
    if message:
        sys.stderr.write(message + "\n")
        sys.exit(1)
