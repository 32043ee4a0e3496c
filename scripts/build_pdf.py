"""Snakemake adapter: compile results/report/report.tex to report.pdf with latexmk (pdflatex)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bloodcells.logs import log_to_file


def compile_pdf(tex: Path, pdf: Path) -> None:
    """Run latexmk in the .tex file's folder (figures/ is found there), building in a scratch folder, then move the
    PDF into place in one rename, so a failed build never leaves a half-written report.pdf."""
    scratch = Path(tempfile.mkdtemp(prefix=".latexmk-", dir=tex.parent))
    try:
        command = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", f"-outdir={scratch}", tex.name]
        print("running:", " ".join(command), flush=True)
        result = subprocess.run(command, cwd=tex.parent, capture_output=True, text=True, timeout=600)
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


def main(smk) -> None:
    """Compile report.tex to report.pdf."""
    log_to_file(smk.log[0])
    compile_pdf(Path(smk.input.tex).resolve(), Path(smk.output[0]).resolve())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
