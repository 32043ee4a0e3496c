"""Snakemake adapter: compile results/report/report.tex to report.pdf with latexmk (pdflatex), behind the walls of
bloodcells.latex."""

from pathlib import Path

from bloodcells.latex import allowed_control_words, compile_pdf
from bloodcells.logs import log_to_file


def main(smk) -> None:
    """Compile report.tex to report.pdf, refusing control words no template writes."""
    log_to_file(smk.log[0])
    allowed = allowed_control_words(smk.input.templates)
    compile_pdf(Path(smk.input.tex).resolve(), Path(smk.output[0]).resolve(), allowed)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
