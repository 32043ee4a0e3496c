# Training: one job per run; a killed job resumes from its last finished epoch.


rule train:
    """Train one run (resumable): model.keras, its per-epoch history and where each session ran."""
    input:
        unpack(train_input),
    output:
        model="results/runs/{run}/model.keras",
        history="results/runs/{run}/history.csv",
        # where each training session of the run ran: host, GPUs, TensorFlow build, epochs
        host="results/runs/{run}/host.json",
    log:
        "logs/train/{run}.log",
    benchmark:
        "benchmarks/train/{run}.tsv"
    # Training first, the costliest runs first (bloodcells.runs.training_priority): every later rule waits on one.
    priority: train_priority
    conda:
        "../envs/tensorflow.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=1,
    params:
        values=run_values,
        dataset=run_dataset_config,
        training=config["training"],
        require_gpu=config["training"]["require_gpu"],
        # Outside the declared outputs, so Snakemake keeps it when a job is killed.
        checkpoint="results/checkpoints/{run}",
    script:
        "../scripts/train.py"
