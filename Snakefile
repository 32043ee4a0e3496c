# Reproduction of "Deep Learning Methods for Peripheral Blood Cell Image Classification".
# Table of contents: config check, stage rules, and the targets of a full build.

from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default; a --configfile given on the command line replaces it instead of being
# merged into it, so a demo or test config never inherits the full study's grid.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


# Description page of `snakemake --report`.
report: "paper/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/gradcam.smk"
include: "rules/tables.smk"
include: "rules/statistics.smk"
include: "rules/report.smk"
include: "rules/check.smk"
include: "rules/bundle.smk"


rule all:
    """Every table, figure and statistic of the poster, and the report (bloodcells.files.targets)."""
    default_target: True
    input:
        files.targets(config, PLAN, TEX_FOUND),
