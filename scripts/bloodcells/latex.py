"""LaTeX from values that may come from someone else's bundle: every value escaped as text, and report.tex compiled
behind walls (only the control words the templates use, no shell escape, a build folder holding only report.tex and
its figures, outside which TeX may neither read nor write: kpathsea's paranoid settings). No numpy or pandas: the
PDF is built by a local rule, in a cluster's login environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters and write the non-ASCII symbols the tables use as LaTeX commands."""
    return "".join(LATEX_REPLACEMENTS.get(char, char) for char in str(text))


# pdflatex's default (OT1) fonts lack these glyphs; each is drawn in math mode or by a command that needs no
# extra font package, so report.tex compiles with texlive-latex-base and -recommended alone.
LATEX_REPLACEMENTS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"$\sim$",
    "^": r"\^{}",
    "±": r"$\pm$",
    "–": "--",
    "—": "---",
    "‡": r"\ddag{}",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "→": r"$\rightarrow$",
    "≈": r"$\approx$",
    "−": "$-$",
    "µ": r"$\mu$",
    "…": r"\ldots{}",
    "°": r"$^\circ$",
    "’": "'",
    "“": "``",
    "”": "''",
    "<": "$<$",
    ">": "$>$",
    "|": r"$|$",
    "α": r"$\alpha$",
}


CONTROL_WORD = re.compile(r"\\([A-Za-z@]+)")
# TeX reads ^^5c as a backslash: a way around any check of control words, and never in the templates' output.
CARET_NOTATION = "^^"
# kpathsea: 'p' (paranoid) refuses absolute paths outside TEXMFOUTPUT, '..' and dot files, for reading and writing.
PARANOID = {"openin_any": "p", "openout_any": "p", "shell_escape": "f"}


def allowed_control_words(templates: Iterable[str | Path]) -> set[str]:
    """The control words the LaTeX templates and the escaping of values write: all report.tex may contain."""
    words = {word for template in templates for word in CONTROL_WORD.findall(Path(template).read_text())}
    return words | {word for text in LATEX_REPLACEMENTS.values() for word in CONTROL_WORD.findall(text)}


def unexpected_commands(tex: str, allowed: set[str]) -> list[str]:
    """The control words of `tex` outside `allowed`, and TeX's caret notation: what no template writes."""
    found = sorted(set(CONTROL_WORD.findall(tex)) - allowed)
    return [f"\\{word}" for word in found] + ([CARET_NOTATION] if CARET_NOTATION in tex else [])


def compile_pdf(tex: Path, pdf: Path, allowed: set[str] | None = None) -> None:
    """Compile `tex` (beside its figures/ folder) to `pdf` with latexmk in a scratch build folder holding copies of
    both, then move the PDF into place in one rename: a failed build never leaves a half-written PDF. With `allowed`,
    a .tex file using any other control word is refused before TeX starts."""
    text = tex.read_text()
    if allowed is not None and (unexpected := unexpected_commands(text, allowed)):
        raise RuntimeError(
            f"{tex} uses TeX commands that no template of paper/ writes ({', '.join(unexpected[:10])}): not compiled, "
            f"no {pdf.name} was written"
        )
    scratch = Path(tempfile.mkdtemp(prefix="latexmk-", dir=tex.parent))
    try:
        shutil.copyfile(tex, scratch / tex.name)
        if (tex.parent / "figures").is_dir():
            shutil.copytree(tex.parent / "figures", scratch / "figures")
        command = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", tex.name]
        print("running:", " ".join(command), flush=True)
        env = os.environ | PARANOID | {"TEXMFOUTPUT": str(scratch)}
        result = subprocess.run(command, cwd=scratch, capture_output=True, text=True, timeout=600, env=env)
        print(result.stdout[-20000:], result.stderr[-5000:], sep="\n", flush=True)
        built = scratch / (tex.stem + ".pdf")
        if result.returncode != 0 or not built.exists():
            raise RuntimeError(
                f"latexmk could not compile {tex} (exit {result.returncode}); the LaTeX log is in "
                f"this rule's log file, and no {pdf.name} was written"
            )
        os.replace(built, pdf)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
