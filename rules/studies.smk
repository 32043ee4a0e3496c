# The poster's studies beyond the grid: Table 2, Table 4 (external folder dataset), the methods tables,
# cross-dataset transfer, bootstrap intervals and McNemar tests. Helper functions are in common.smk.


rule synthesize_folder:
    """Synthetic cells written in a folder dataset's layout (Raabin-WBC's), for tests and the demo."""
    output:
        directory("results/folders/{dataset}"),
    log:
        "logs/synthesize_folder/{dataset}.log",
    conda:
        "../envs/data.yaml"
    params:
        source=dataset_config,
    script:
        "../scripts/synthesize_folder.py"


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


rule study_table:
    """One study table (Table 2, Table 4, a methods table, transfer) beside the poster's values: CSV, HTML, LaTeX."""
    input:
        unpack(study_table_input),
    output:
        csv="results/tables/{table}.csv",
        json="results/tables/{table}.json",
        html=report(
            "results/tables/{table}.html",
            caption="../paper/captions/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
        tex="results/tables/{table}.tex",
    log:
        "logs/tables/{table}.log",
    conda:
        "../envs/report.yaml"
    params:
        table=table_params,
        recipe=plan.recipe_facts(config),
    script:
        "../scripts/study_tables.py"


rule statistics:
    """McNemar tests of the poster's comparisons on the same test images, and every run's bootstrap interval."""
    input:
        predictions=files.run_files(plan.compared_runs(config, RUNS), "predictions.npz"),
        bootstrap=files.run_files(RUNS, "bootstrap.json"),
        poster=paper_file("poster_values.yaml"),
        texts=paper_file("report.yaml"),
    output:
        json="results/stats/significance.json",
        csv="results/stats/significance.csv",
        bootstrap="results/stats/bootstrap.csv",
    log:
        "logs/stats/significance.log",
    conda:
        "../envs/report.yaml"
    params:
        runs=plan.compared_runs(config, RUNS),
        boot_runs=list(RUNS),
        studies=plan.compared_configs(PLAN),
        alpha=config["statistics"]["alpha"],
    script:
        "../scripts/significance.py"
