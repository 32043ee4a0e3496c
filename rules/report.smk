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
            ext=["csv", "json", "tex"],
        ),
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
    script:
        "../scripts/make_tables.py"


rule provenance:
    input:
        data=data_files_used(),
        hosts=expand("results/runs/{run}/host.json", run=RUNS),
    output:
        "results/report/provenance.json",
    log:
        "logs/report/provenance.log",
    conda:
        "../envs/tensorflow.yaml"
    params:
        repo=str(REPO),
        snakemake_version=SNAKEMAKE_VERSION,
        # a changed config reruns this rule, so the hash in the report is the config that built it
        config_hash=config_hash(config),
        runs=list(RUNS),
    script:
        "../scripts/provenance.py"


rule report:
    input:
        unpack(report_input),
    output:
        html=report(
            "results/report/report.html",
            caption="../paper/captions/report.rst",
            category="Report",
            labels={"format": "HTML"},
        ),
        tex="results/report/report.tex",
        figures=directory("results/report/figures"),
    log:
        "logs/report/report.log",
    conda:
        "../envs/report.yaml"
    params:
        table3_runs=TABLE3_RUNS,
        table3_values={run: RUNS[run] for run in TABLE3_RUNS},
        all_runs=list(RUNS),
        gradcam_runs=GRADCAM_RUNS,
        gradcam_layer=config["gradcam"]["layer"],
        dataset=config["dataset"],
        synthetic=config["datasets"][config["dataset"]]["source"] == "synthetic",
        configfile=CONFIG_FILE_NAME,
        pdf_note=PDF_NOTE,
    script:
        "../scripts/report.py"


# TeX was looked for on the host that runs Snakemake (TEX_FOUND), so the PDF is compiled there, not on a cluster node.
localrules:
    report_pdf,
    report_pdf_not_built,


rule report_pdf:
    input:
        tex="results/report/report.tex",
        figures="results/report/figures",
    output:
        report(
            "results/report/report.pdf",
            caption="../paper/captions/report.rst",
            category="Report",
            labels={"format": "PDF"},
        ),
    log:
        "logs/report/report_pdf.log",
    # the env gives the script its Python; latexmk and pdflatex come from the system's TeX, on PATH
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/build_pdf.py"


# Where TeX is missing the workflow still finishes; this file says why there is no PDF.
rule report_pdf_not_built:
    output:
        "results/report/report_pdf_not_built.txt",
    log:
        "logs/report/report_pdf.log",
    conda:
        "../envs/report.yaml"
    params:
        reason=PDF_NOTE,
    script:
        "../scripts/pdf_not_built.py"
