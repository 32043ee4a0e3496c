# Reproduction of "Deep Learning Methods for Peripheral Blood Cell Image Classification".
# Table of contents: config check, stage rules, and the targets of a full build.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
