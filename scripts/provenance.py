"""Snakemake adapter: results/report/provenance.json (git state, versions, config hash, data MD5s, the host of each
training session of each run, and the host where the report was assembled)."""

import json
from datetime import UTC, datetime

from bloodcells.atomic import write_text_atomic
from bloodcells.gpus import machine_gpus, tensorflow_info
from bloodcells.logs import log_to_file
from bloodcells.provenance import data_files, git_state, host, package_versions, training_hosts


def main(smk) -> None:
    """Collect the provenance of this build."""
    log_to_file(smk.log[0])
    tf = tensorflow_info()
    record = {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_state(smk.params.repo),
        "versions": package_versions() | {"snakemake": smk.params.snakemake_version},
        "config_sha256": smk.params.config_hash,
        "data_files": data_files(smk.input.data),
        "training_hosts": training_hosts(smk.params.runs, smk.input.hosts),
        # this job's machine: where the report was assembled, not where any run trained
        "report_assembled_on": host()
        | {
            "gpus_tensorflow_sees": tf.get("gpus", []),
            "gpus_machine": machine_gpus()["nvidia_smi"],
            "cuda_build": tf.get("cuda_version"),
        },
    }
    write_text_atomic(smk.output[0], json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
