# The tables beside the poster's values: Tables 1 and 3 of the grid, and one table of each other study
# (Table 2, Table 4, the methods tables, transfer), rendered from the templates in paper/.


rule tables_grid:
    """Tables 1 and 3 (class F1; accuracy and AUC of the grid) beside the poster's values: CSV, HTML, LaTeX."""
    input:
        metrics=files.run_files(TABLE3_RUNS, "metrics.json"),
        bootstrap=files.run_files(TABLE3_RUNS, "bootstrap.json"),
        poster=paper_file("poster_values.yaml"),
        texts=paper_file("tables.yaml"),
        templates=files.templates(REPO / "paper", "table"),
    output:
        files.table_files(plan.GRID_TABLES, ["csv", "json", "tex"]),
        table1=report(
            "results/tables/table1.html",
            caption="../paper/captions/table.rst",
            category="Tables",
            labels={"table": "Table 1"},
        ),
        table3=report(
            "results/tables/table3.html",
            caption="../paper/captions/table.rst",
            category="Tables",
            labels={"table": "Table 3"},
        ),
    log:
        "logs/tables/grid.log",
    conda:
        "../envs/report.yaml"
    params:
        runs=[RUNS[run] | {"run": run} for run in TABLE3_RUNS],
        dataset=config["dataset"],
        source=config["datasets"][config["dataset"]]["source"],
        synthetic=plan.is_synthetic(config, config["dataset"]),
        recipe=plan.recipe_facts(config),
    script:
        "../scripts/make_tables.py"


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
