# Evaluation on the test split (read only here), and training curves.


rule evaluate:
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
        dataset=lambda wildcards: RUNS[wildcards.run]["dataset"],
        require_gpu=config["training"]["require_gpu"],
    script:
        "../scripts/evaluate.py"


rule plot_curves:
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
