"""Test helpers of results bundles: the files of a fake build, each with content of the kind the workflow writes
there (bloodcells.restored_files checks it on restore), and bundles rewritten member by member."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import yaml
from conftest import SCHEMA, TINY

from bloodcells import bundle, bundle_contents, plan, restored_files, restoring
from bloodcells.config import validate_config
from bloodcells.names import class_names_of

PNG = b"\x89PNG\r\n\x1a\n"


def session(run: str) -> dict:
    """A training session record as rule train writes it into host.json."""
    return {
        "hostname": "gpu-node-1",
        "os": "Linux-6.1-x86_64-with-glibc2.36",
        "cpu": "AMD EPYC",
        "cpus": 16,
        "memory_gib": 125.5,
        "cpus_available": 8,
        "started_utc": "2026-12-01T10:00:00+00:00",
        "gpus": [{"name": "NVIDIA H100", "driver_version": "550.54.15"}],
        "gpus_tensorflow": [{"device": "/physical_device:GPU:0", "compute_capability": "9.0"}],
        "cuda_visible_devices": "0",
        "tensorflow": "2.21.0",
        "cuda_build": "12.5.1",
        "cudnn_build": "9",
        "xla": True,
        "mixed_precision": True,
        "threads": 8,
        "slurm_job_id": None,
        "slurm_job_nodelist": None,
        "epochs": [1, 2],
    }


def provenance(runs) -> dict:
    """A provenance.json record of a build of `runs`."""
    return {
        "created_utc": "2026-12-01T12:00:00+00:00",
        "git": {"commit": "0" * 40, "dirty": False},
        "versions": {"python": "3.11.7", "tensorflow": "2.21.0"},
        "config_sha256": "ab" * 32,
        "data_files": [{"path": "results/data/synthetic/32.npz", "bytes": 1234, "md5": "cd" * 16}],
        "training_hosts": {run: [session(run)] for run in runs},
        "report_assembled_on": {
            "hostname": "login",
            "os": "Linux",
            "cpu": "AMD EPYC",
            "cpus": 2,
            "memory_gib": 23.5,
            "gpus_tensorflow_sees": [],
            "gpus_machine": [],
            "cuda_build": None,
        },
    }


def per_class(classes) -> dict:
    """Per-class precision, recall, F1 and support."""
    return {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for name in classes}


def npz(**arrays) -> bytes:
    """An .npz file's bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def file_content(path: str, config: dict, runs: dict[str, dict]) -> bytes:
    """Bytes of the kind the workflow writes at `path` (unique to the path) for a build of `config` planning `runs`."""
    name, run = PurePosixPath(path).name, restored_files.run_of(path)
    classes = class_names_of(config["datasets"][runs[run]["dataset"]]) if run in runs else ()
    tag = hashlib.sha256(path.encode()).hexdigest()
    if path.startswith("benchmarks/"):
        return f"s\th:m:s\tmax_rss\n61.5\t0:01:01\t{int(tag[:4], 16)}.5\n".encode()
    if name.endswith(".png"):
        return PNG + tag.encode()
    if name.endswith(".pdf"):
        return b"%PDF-1.4\n%" + tag.encode()
    if name.endswith(".npz"):
        return npz(labels=np.arange(4) % max(len(classes), 1), tag=np.array([tag]))
    if path == bundle_contents.PROVENANCE:
        record = provenance(runs)
    elif path.startswith("results/transfer/"):
        target = class_names_of(config["datasets"][PurePosixPath(path).parts[3]])
        record = {
            "n_images": 4,
            "source_classes": list(classes),
            "target_classes": list(target),
            "unrestricted_accuracy": 0.5,
            "restricted_accuracy": 0.5,
            "restricted_auc": 0.75,
            "share_predicted_outside_target_classes": 0.25,
            "restricted_per_class": per_class(target),
            "run": run,
            "target_dataset": PurePosixPath(path).parts[3],
        }
    elif name == "metrics.json":
        n = len(classes)
        record = {
            "accuracy": int(tag[:2], 16) / 255,
            "auc": 0.75,
            "n_images": 2 * n,
            "class_names": list(classes),
            "per_class": per_class(classes),
            "confusion_matrix": [[2 if i == j else 0 for j in range(n)] for i in range(n)],
        }
    elif name == "bootstrap.json":
        interval = {"low": 0.4, "high": 0.6}
        record = {"accuracy": interval, "auc": interval, "n_boot": 200, "level": 0.95, "run": run}
    elif name == "host.json":
        record = {"run": run, "sessions": [session(run)]}
    elif name == "history.csv":
        return f"epoch,loss,val_loss\n1,{int(tag[:4], 16)},0.5\n2,0.25,0.5\n".encode()
    elif name == "focus.csv":
        header = ",".join(restored_files.FOCUS_COLUMNS)
        rows = [f"{c},3,0,0.5,0.1,0.4,1.25,cell" for c in (*classes, "all")]
        return "\n".join([header, *rows]).encode() + b"\n"
    else:
        raise ValueError(f"no content known for {path}")
    return json.dumps(record, indent=1).encode()


def fake_build(root: Path, config: dict) -> dict[str, str | None]:
    """The files of a finished build of `config` under `root`, with content of their kind; path -> run."""
    made = plan.make_plan(config)
    paths = bundle_contents.bundled_files(config, made)
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(file_content(path, config, made.runs))
    return paths


def tiny_config(**changes) -> dict:
    """The tiny test config, validated (defaults filled in), with top-level `changes`."""
    return validate_config(yaml.safe_load(TINY.read_text()) | changes, SCHEMA)


def fake_bundle(folder: Path, config: dict) -> tuple[Path, dict]:
    """A bundle of a fake build of `config` (files under folder/source, with the content the workflow writes) at
    folder/results-bundle.tar.gz: (its path, its manifest)."""
    paths = fake_build(folder / "source", config)
    archive = folder / "results-bundle.tar.gz"
    git = {"commit": "0" * 40, "dirty": False}
    runs = plan.make_plan(config).runs
    manifest = bundle.write_bundle(
        archive, folder / "source", paths, runs, bundle_contents.results_config(config), git, False
    )
    return archive, manifest


def restore(root: Path, config: dict, **keys) -> restoring.Restored:
    """Run the parse-time hook for `config` with config keys `keys` into `root`."""
    return restoring.restore_configured(config | keys, plan.make_plan(config), root, log=lambda message: None)


def members(archive: Path) -> dict[str, bytes]:
    """Name -> bytes of each member of a bundle."""
    with tarfile.open(archive, "r:gz") as tar:
        return {member.name: tar.extractfile(member).read() for member in tar}


def repack(folder: Path, contents: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A bundle in `folder` with exactly these members (name -> bytes), plus symbolic links (name -> target)."""
    dest = folder / "tampered.tar.gz"
    with tarfile.open(dest, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return dest


def relisted(contents: dict[str, bytes], changes: dict[str, bytes | None], **manifest_changes) -> dict[str, bytes]:
    """Bundle contents with members added, replaced or (None) removed, each listed in the manifest with its true hash
    and size, as an attacker who rewrites the manifest would; `manifest_changes` set top-level manifest fields."""
    manifest = json.loads(contents[bundle.MANIFEST])
    entries = {entry["path"]: entry for entry in manifest["files"]}
    contents = dict(contents)
    for name, data in changes.items():
        if data is None:
            entries.pop(name, None)
            contents.pop(name, None)
            continue
        run = entries[name]["run"] if name in entries else None
        entries[name] = {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "run": run}
        contents[name] = data
    manifest |= {"files": list(entries.values())} | manifest_changes
    config = contents[bundle.CONFIG]
    manifest["config"]["sha256"] = hashlib.sha256(config).hexdigest()
    return {bundle.MANIFEST: json.dumps(manifest).encode()} | {
        k: v for k, v in contents.items() if k != bundle.MANIFEST
    }


def tree_hash(root: Path) -> str:
    """SHA-256 over every path (files, folders, links) under `root` and every file's bytes: equal only when nothing
    under `root` changed."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file() and not path.is_symlink():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
