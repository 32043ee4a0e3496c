# Training: one job per run; a killed job resumes from its last finished epoch.


rule train:
    input:
        data=run_data,
    output:
        model="results/runs/{run}/model.keras",
        history="results/runs/{run}/history.csv",
    log:
        "logs/train/{run}.log",
    benchmark:
        "benchmarks/train/{run}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=1,
    params:
        values=run_values,
        training=config["training"],
        # Outside the declared outputs, so Snakemake keeps it when a job is killed.
        checkpoint="results/checkpoints/{run}",
    script:
        "../scripts/train.py"
