# The poster's studies beyond the grid: Table 2, Table 4 (external folder dataset), the methods tables,
# cross-dataset transfer, bootstrap intervals and McNemar tests. Helper functions are in common.smk.


rule synthesize_folder:
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
        source_dataset=lambda wildcards: RUNS[wildcards.run]["dataset"],
        batch_size=config["evaluation"]["batch_size"],
        require_gpu=config["training"]["require_gpu"],
    script:
        "../scripts/transfer.py"


rule study_table:
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
        runs=lambda wildcards: table_params(wildcards)["runs"],
        configs=lambda wildcards: table_params(wildcards)["configs"],
        dataset=lambda wildcards: table_params(wildcards)["dataset"],
        synthetic=lambda wildcards: table_params(wildcards)["synthetic"],
        attention_note=ATTENTION_NOTE,
    script:
        "../scripts/study_tables.py"


rule statistics:
    input:
        predictions=expand("results/runs/{run}/predictions.npz", run=compared_runs()),
        bootstrap=expand("results/runs/{run}/bootstrap.json", run=RUNS),
        poster=repo_file("paper/poster_values.yaml"),
    output:
        json="results/stats/significance.json",
        csv="results/stats/significance.csv",
        bootstrap="results/stats/bootstrap.csv",
    log:
        "logs/stats/significance.log",
    conda:
        "../envs/report.yaml"
    params:
        runs=compared_runs(),
        boot_runs=list(RUNS),
        studies={study: study_configs(study) for study in COMPARED_STUDIES},
        alpha=config["statistics"]["alpha"],
    script:
        "../scripts/statistics.py"
