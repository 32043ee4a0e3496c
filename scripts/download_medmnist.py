"""Snakemake adapter: download one official MedMNIST npz (or the mirror the config names) and verify its MD5."""

from pathlib import Path

from bloodcells.download import download_verified, medmnist_url_and_md5
from bloodcells.logs import log_to_file


def main(smk) -> None:
    """Download the npz named by the wildcards, from the config's mirror where it names one."""
    log_to_file(smk.log[0])
    mirror = smk.params.mirror
    official = medmnist_url_and_md5(smk.wildcards.flag, int(smk.wildcards.size))
    url, md5 = (mirror["url"], mirror["md5"]) if mirror else official
    download_verified(url, md5, Path(smk.output[0]))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
