"""The folders a user downloads by hand (Raabin-WBC, PBC): which ones a plan reads, and what to say when one is
missing. Imported when the Snakefile is parsed (on a cluster's login node): standard library only."""

from __future__ import annotations

from pathlib import Path


def user_folders(config: dict, runs: dict[str, dict]) -> dict[str, str]:
    """Dataset name -> the folder a user provides (pbc, or folder with `path`), for the datasets planned runs use."""
    used = {values["dataset"] for values in runs.values()}
    if config.get("transfer"):
        used.add(config["transfer"]["to"])
    return {
        name: source["path"]
        for name, source in config["datasets"].items()
        if name in used and source["source"] in ("pbc", "folder") and "synthesize" not in source
    }


def missing_folder_message(config: dict, dataset: str, root: Path) -> str | None:
    """Why the user folder of `dataset` cannot be read (missing folder or training subfolder), or None when present."""
    source = config["datasets"][dataset]
    folder = root / source["path"]
    needed = folder / source["train"] if source["source"] == "folder" else folder
    if needed.is_dir():
        return None
    lines = [
        f"Dataset '{dataset}' is read from {source['path']} (config key 'datasets.{dataset}.path'), "
        f"but {needed} is not there."
    ]
    if source.get("homepage"):
        lines.append(
            f"Download it from {source['homepage']} and unpack it there"
            + (
                f" so that {source['path']}/{source['train']}/ holds one folder per class "
                f"({', '.join(source['classes'])})."
                if source["source"] == "folder"
                else "."
            )
        )
    if dataset != config["dataset"]:
        lines.append(
            f"Or leave out the studies that need '{dataset}' (Table 4) and the transfer evaluation: "
            "add --config external=False to the snakemake command, or set `external: false` in the config."
        )
    return " ".join(lines)
