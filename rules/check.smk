# Environment check: `snakemake check_environment` (add --use-conda, or a profile, to check the
# tensorflow env on the machine or node the GPU rules use). No output file, so it runs every time it
# is asked for, and never as part of `all`. The report is printed and written to its log.


rule check_environment:
    """Report TensorFlow, its GPUs and CUDA build, and free disk space (run on request, never by `all`)."""
    log:
        "logs/check_environment.log",
    conda:
        "../envs/tensorflow.yaml"
    threads: 1
    resources:
        gpu=1,  # same placement as train/evaluate/gradcam: on SLURM a GPU node, locally counted as a GPU job
    params:
        results="results",
    script:
        "../scripts/check_environment.py"
