# Evaluation of each trained run: its predictions of the test split, the bootstrap intervals of its test scores,
# its predictions of another dataset's test split (transfer), and its training curves. Test splits are read only here.


rule evaluate:
    """Predict the run's test split once: predictions.npz and metrics.json (accuracy, AUC, per class)."""
    input:
        model="results/runs/{run}/model.keras",
        data=run_data,
    output:
        predictions="results/runs/{run}/predictions.npz",
        metrics="results/runs/{run}/metrics.json",
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    # After training, the longest jobs first: every table and figure waits on one of them.
    priority: 5
    conda:
        "../envs/tensorflow.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=1,
    params:
        batch_size=config["evaluation"]["batch_size"],
        dataset=run_dataset_config,
        require_gpu=config["training"]["require_gpu"],
    script:
        "../scripts/evaluate.py"


rule bootstrap:
    """Bootstrap 95 % intervals of one run's test accuracy and AUC."""
    input:
        "results/runs/{run}/predictions.npz",
    output:
        "results/runs/{run}/bootstrap.json",
    log:
        "logs/bootstrap/{run}.log",
    conda:
        "../envs/report.yaml"
    params:
        n_boot=config["statistics"]["bootstrap"],
        seed=config["statistics"]["seed"],
    script:
        "../scripts/bootstrap.py"


rule transfer:
    """Predict another dataset's test split with a trained run: cross-dataset transfer accuracy and AUC."""
    input:
        model="results/runs/{run}/model.keras",
        data=transfer_data,
    output:
        predictions="results/transfer/{run}/{dataset}/predictions.npz",
        metrics="results/transfer/{run}/{dataset}/metrics.json",
    log:
        "logs/transfer/{run}_{dataset}.log",
    benchmark:
        "benchmarks/transfer/{run}_{dataset}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=1,
    params:
        source=run_dataset_config,
        target=dataset_config,
        batch_size=config["evaluation"]["batch_size"],
        require_gpu=config["training"]["require_gpu"],
    script:
        "../scripts/transfer.py"


rule plot_curves:
    """Plot a run's training and validation curves, epoch by epoch."""
    input:
        "results/runs/{run}/history.csv",
    output:
        report(
            "results/runs/{run}/curves.png",
            caption="../paper/captions/curves.rst",
            category="Training curves",
            labels={"run": "{run}"},
        ),
    log:
        "logs/curves/{run}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/plot_curves.py"


rule plot_confusion:
    """Plot a run's confusion matrix on the test split."""
    input:
        "results/runs/{run}/metrics.json",
    output:
        report(
            "results/runs/{run}/confusion.png",
            caption="../paper/captions/confusion.rst",
            category="Confusion matrices",
            labels={"run": "{run}"},
        ),
    log:
        "logs/confusion/{run}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/plot_confusion.py"


rule compare_curves:
    """Plot the validation loss of the Table 3 grid's runs, compared by image size and by architecture."""
    input:
        expand("results/runs/{run}/history.csv", run=TABLE3_RUNS),
    output:
        report(
            "results/figures/curves_compared.png",
            caption="../paper/captions/curves_compared.rst",
            category="Training curves",
            labels={"figure": "validation loss compared"},
        ),
    log:
        "logs/curves/compared.log",
    conda:
        "../envs/report.yaml"
    params:
        runs=TABLE3_RUNS,
        values={run: RUNS[run] for run in TABLE3_RUNS},
    script:
        "../scripts/compare_curves.py"
