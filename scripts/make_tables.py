"""Snakemake adapter: Tables 1 and 3 in CSV, HTML and LaTeX."""

from pathlib import Path

from bloodcells.logs import log_to_file
from bloodcells.tables import confidence_note, grid_table, read_json, run_records, summarise, write_table_files
from bloodcells.texts import load_paper_yaml, table_notes


def main(smk) -> None:
    """Build both tables from the runs' metrics and the poster's values."""
    log_to_file(smk.log[0])
    metrics = [read_json(path) for path in smk.input.metrics]
    boots = [read_json(path) for path in smk.input.bootstrap]
    poster, texts = load_paper_yaml(smk.input.poster), load_paper_yaml(smk.input.texts)
    summary = summarise(run_records(smk.params.runs, metrics, boots))
    facts = smk.params.recipe | {"dataset": smk.params.dataset, "source": smk.params.source}
    facts["confidence"] = confidence_note(summary["n_seeds"])
    out = {Path(path).name: path for path in smk.output}
    for table in ("table3", "table1"):
        compared, cells = grid_table(summary, poster, table)
        context = cells | {
            "title": texts["titles"][table],
            "caption": poster[table]["caption"],
            "notes": table_notes(texts, table, facts),
            "synthetic": smk.params.synthetic,
        }
        files = {ext: out[f"{table}.{ext}"] for ext in ("csv", "json", "html", "tex")}
        write_table_files(compared, context, files, Path(smk.input.templates[0]).parent)
        print(compared.to_string())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
