# The McNemar tests of the comparisons the poster draws its conclusions from, and every run's bootstrap
# interval in one table.

# Every run on the main dataset: the McNemar tests read their test predictions.
COMPARED_RUNS = plan.compared_runs(config, RUNS)


rule statistics:
    """McNemar tests of the poster's comparisons on the same test images, and every run's bootstrap interval."""
    input:
        predictions=files.run_files(COMPARED_RUNS, "predictions.npz"),
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
        runs=COMPARED_RUNS,
        boot_runs=list(RUNS),
        studies=plan.compared_configs(PLAN),
        alpha=config["statistics"]["alpha"],
    script:
        "../scripts/significance.py"
