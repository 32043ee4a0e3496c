# Tables 1 and 3: reproduced values beside the poster's, rendered from templates in paper/.


rule tables_grid:
    input:
        metrics=expand("results/runs/{run}/metrics.json", run=TABLE3_RUNS),
        bootstrap=expand("results/runs/{run}/bootstrap.json", run=TABLE3_RUNS),
        poster=repo_file("paper/poster_values.yaml"),
        templates=TABLE_TEMPLATES,
    output:
        expand(
            "results/tables/{table}.{ext}",
            table=["table1", "table3"],
            ext=["csv", "json", "html", "tex"],
        ),
    log:
        "logs/tables/grid.log",
    conda:
        "../envs/report.yaml"
    params:
        runs=[RUNS[run] | {"run": run} for run in TABLE3_RUNS],
        dataset=config["dataset"],
    script:
        "../scripts/make_tables.py"
