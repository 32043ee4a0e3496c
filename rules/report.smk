# The report: provenance of the build, every table, figure, statistic and conclusion in HTML and LaTeX, and its PDF.


rule provenance:
    """Provenance of the build: git state, package versions, config hash, data MD5s, where each run trained."""
    input:
        data=files.data_files_used(config, RUNS),
        hosts=files.run_files(RUNS, "host.json"),
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
        config_hash=plan.config_hash(bundle_contents.results_config(config)),
        runs=list(RUNS),
    script:
        "../scripts/provenance.py"


rule report:
    """The paper report: every table, figure, statistic and conclusion beside the poster's, in HTML and LaTeX."""
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
        synthetic=plan.is_synthetic(config, config["dataset"]),
        configfile=CONFIG_FILE_NAME,
        pdf_note=PDF_NOTE,
        build=plan.report_config(config),
    script:
        "../scripts/report.py"


# TeX is looked for on the host that runs Snakemake (TEX_FOUND), so the PDF is compiled there, not on a cluster node.
localrules:
    report_pdf,
    report_pdf_not_built,


rule report_pdf:
    """report.pdf compiled from report.tex by latexmk (pdflatex), where TeX is installed."""
    input:
        tex="results/report/report.tex",
        figures="results/report/figures",
        # the control words these write are all report.tex may use (bloodcells.latex)
        templates=[paper_file("report.tex.j2"), paper_file("result_table.tex.j2")],
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
    """Where TeX is missing: a file beside the report that says why report.pdf was not built."""
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
