"""Snakemake adapter: Grad-CAM panels, heatmaps and per-class focus scores of one run on its test split.

No `from __future__` import: Snakemake's script: directive puts its preamble above the first line.
"""

from bloodcells.gradcam_job import GradcamJob, explain_run
from bloodcells.jobsetup import start_tensorflow_job


def main(smk) -> None:
    """Compute Grad-CAM for every test image (predicted class), then write panels, heatmaps.npz and focus.csv."""
    start_tensorflow_job(
        smk.log[0], "gradcam", {"run": smk.wildcards.run}, smk.resources.gpu, smk.params.require_gpu, smk.threads
    )
    job = GradcamJob(
        run=smk.wildcards.run,
        model=smk.input.model,
        data=smk.input.data,
        predictions=smk.input.predictions,
        source=smk.params.dataset,
        layer=smk.params.layer,
        per_class_correct=smk.params.per_class_correct,
        per_class_mistakes=smk.params.per_class_mistakes,
        batch_size=smk.params.batch_size,
        disc_radius=smk.params.disc_radius,
    )
    explain_run(job, smk.output.panel, smk.output.pdf, smk.output.heatmaps, smk.output.focus)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
