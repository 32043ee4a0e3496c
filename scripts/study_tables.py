"""Snakemake adapter: one study table (Table 2, Table 4, a methods table or the transfer table) in CSV, HTML, LaTeX."""

from pathlib import Path

import pandas as pd

from bloodcells.history import best_epoch_row
from bloodcells.logs import log_to_file
from bloodcells.studies import study_table
from bloodcells.tables import confidence_note, read_json, write_table_files
from bloodcells.texts import load_paper_yaml, row_header, table_notes

# How each kind of per-run input is read; a table's inputs are listed in the order of its runs.
READERS = {
    "transfer": read_json,
    "metrics": read_json,
    "bootstrap": read_json,
    "history": lambda path: best_epoch_row(pd.read_csv(path).to_dict("records")),
}


def main(smk) -> None:
    """Build the table named by the wildcard."""
    log_to_file(smk.log[0])
    table, spec = smk.wildcards.table, smk.params.table
    results = {
        kind: dict(zip(spec["runs"], map(read, getattr(smk.input, kind)), strict=True))
        for kind, read in READERS.items()
        if hasattr(smk.input, kind)
    }
    poster = load_paper_yaml(smk.input.poster).get(table, {"values": [], "caption": ""})
    configs = [(values, members) for values, members in spec["configs"]]
    frame, cells = study_table(table, configs, spec["runs"], results, poster["values"])
    texts = load_paper_yaml(smk.input.texts)
    facts = smk.params.recipe | {key: spec[key] for key in ("dataset", "source")}
    facts["confidence"] = confidence_note([smk.params.recipe["n_seeds"]])
    context = cells | {
        "title": texts["titles"][table],
        "caption": poster.get("caption", ""),
        "notes": table_notes(texts, table, facts),
        "synthetic": spec["synthetic"],
        "row_header": row_header(texts, table),
    }
    outputs = {Path(path).suffix[1:]: path for path in smk.output}
    write_table_files(frame, context, outputs, Path(smk.input.templates[0]).parent)
    print(frame.to_string())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
