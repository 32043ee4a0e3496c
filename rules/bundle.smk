# Results bundles: `snakemake bundle` packs what the tables, figures and report are made from into one verified file;
# config key restore unpacks one before planning (bloodcells.restoring.restore_configured, called in common.smk), and
# rule restored then stands for the restored files, so no job that made them (train, evaluate, ...) is planned.

# What `snakemake bundle` packs, path -> run: each run's results, Grad-CAM, transfer, benchmarks; montage, provenance.
BUNDLED = bundle_contents.bundled_files(
    config, PLAN, config.get("bundle_models", False)
)


localrules:
    bundle,
    restored,


rule bundle:
    """Every run's results, Grad-CAM, transfer, benchmarks and provenance, config and manifest in one .tar.gz."""
    input:
        list(BUNDLED),
    output:
        bundle.BUNDLE_FILE,
    log:
        "logs/bundle/bundle.log",
    conda:
        "../envs/tensorflow.yaml"  # as rule provenance: the git state comes from bloodcells.provenance
    params:
        files=BUNDLED,
        runs=RUNS,
        config=bundle_contents.results_config(config),
        repo=str(REPO),
        models=config.get("bundle_models", False),
    script:
        "../scripts/bundle.py"


# Restored files are made by no job: each is its own job with no input, so Snakemake never plans what made it
# (rule restored only runs when such a file has gone, to say so).
ruleorder: restored > train
ruleorder: restored > evaluate
ruleorder: restored > gradcam
ruleorder: restored > transfer
ruleorder: restored > bootstrap
ruleorder: restored > montage
ruleorder: restored > provenance


rule restored:
    """A file put in place from a results bundle (config key restore); fails, naming the file, if it has gone."""
    output:
        "{restored}",
    log:
        "logs/restored/{restored}.log",
    wildcard_constraints:
        restored=restoring.restored_pattern(RESTORED),
    conda:
        "../envs/report.yaml"
    params:
        marker=restoring.MARKER,
    # A shell action, not a script: a script counts as code newer than the restored files and Snakemake would
    # delete and rebuild them (tests/test_bundle.py). Every value reaches the shell quoted (:q).
    shell:
        "echo {output:q} 'was restored from a results bundle and is gone: run again with config key restore to put "
        "it back, or delete' {params.marker:q} 'to build it here' | tee {log:q} >&2; exit 1"
