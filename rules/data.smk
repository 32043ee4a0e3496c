# Data: every source becomes results/data/{dataset}/{size}.npz in the BloodMNIST npz schema.


# Network rules run where Snakemake runs (a cluster's login node): compute nodes may have no internet.
localrules:
    download_medmnist,
    download_weights,


rule download_medmnist:
    """One official MedMNIST npz (flag, size), checked against the MD5 that medmnist records (or a mirror's)."""
    output:
        "results/downloads/{flag}_{size}.npz",
    log:
        "logs/download/{flag}_{size}.log",
    conda:
        "../envs/data.yaml"
    params:
        mirror=medmnist_mirror,
    script:
        "../scripts/download_medmnist.py"


rule download_weights:
    """ImageNet no-top weights of one ResNet from Keras' URL, MD5-checked: fetched once, read by every training job."""
    output:
        download.imagenet_weights_pattern(config),
    log:
        "logs/download/{arch}_imagenet_notop.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/download_weights.py"


rule prepare_dataset:
    """A dataset from its source (medmnist, synthetic, pbc, folder) at one size, in the BloodMNIST npz schema."""
    input:
        download_input,
    output:
        "results/data/{dataset}/{size}.npz",
    log:
        "logs/prepare/{dataset}_{size}.log",
    benchmark:
        "benchmarks/prepare/{dataset}_{size}.tsv"
    conda:
        "../envs/data.yaml"
    params:
        source=dataset_config,
    script:
        "../scripts/prepare_dataset.py"


rule montage:
    """Four training images of each class of a dataset, at the default size."""
    input:
        files.data_file("{dataset}", config["defaults"]["size"]),
    output:
        report(
            "results/figures/montage_{dataset}.png",
            caption="../paper/captions/montage.rst",
            category="Data",
        ),
    log:
        "logs/montage/{dataset}.log",
    conda:
        "../envs/data.yaml"
    params:
        source=dataset_config,
    script:
        "../scripts/montage.py"


rule synthesize_folder:
    """Synthetic cells written in a folder dataset's layout (Raabin-WBC's), for tests and the demo."""
    output:
        directory("results/folders/{dataset}"),
    log:
        "logs/synthesize_folder/{dataset}.log",
    conda:
        "../envs/data.yaml"
    params:
        source=dataset_config,
    script:
        "../scripts/synthesize_folder.py"
