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
    conda:
        "../envs/tensorflow.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=1,
    params:
        batch_size=config["evaluation"]["batch_size"],
        dataset=lambda wildcards: RUNS[wildcards.run]["dataset"],
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
