"""Snakemake adapter: download the ImageNet no-top weights of one ResNet and verify Keras' MD5."""

from pathlib import Path

from bloodcells.download import download_verified, imagenet_weights_url_and_md5
from bloodcells.logs import log_to_file


def main(smk) -> None:
    """Download the weights of the architecture named by the wildcard."""
    log_to_file(smk.log[0])
    url, md5 = imagenet_weights_url_and_md5(smk.wildcards.arch)
    download_verified(url, md5, Path(smk.output[0]))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
