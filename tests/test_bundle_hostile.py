"""Hostile and broken bundles: each is refused with a message that names the reason, and the working folder is
byte-identical before and after (tree_hash). Restores that fail midway (a vanished member, a full disk, a record that
cannot be written) leave nothing behind either."""

from __future__ import annotations

import errno
import gzip
import json
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from bundles import fake_bundle, members, npz, relisted, repack, restore, tiny_config, tree_hash
from conftest import REPO

from bloodcells import bundle, restoring, staging, tar_limits
from bloodcells.bundle_contents import PROVENANCE

RUN = "synthetic-32-resnet50-bs16-s0"
EXPLAINED = "synthetic-32-resnet101-bs16-s0"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, dict]:
    """A bundle of a fake tiny build whose files have the content the workflow writes: (its path, the config)."""
    config = tiny_config()
    archive, _ = fake_bundle(tmp_path_factory.mktemp("good"), config)
    return archive, config


@pytest.fixture
def work(tmp_path) -> Path:
    """A working folder that already holds results of its own (which a refused restore must leave alone)."""
    root = tmp_path / "work"
    mine = root / f"results/runs/{RUN}/curves.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"made here")
    (root / "benchmarks").mkdir()
    return root


def refused(root: Path, config: dict, archive: Path, **keys) -> str:
    """The message of a restore that must be refused, after checking that it changed nothing under `root`."""
    before = tree_hash(root)
    with pytest.raises(bundle.BundleError) as error:
        restore(root, config, restore=str(archive), **keys)
    assert tree_hash(root) == before
    message = str(error.value)
    assert "nothing was restored" in message, message
    return message


def test_the_good_bundle_restores(good, work):
    # the baseline of every case below: the same bundle unchanged is accepted
    archive, config = good
    assert len(restore(work, config, restore=str(archive)).runs) == 11


# --- names the manifest may not give ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        f"results/runs/{RUN}/curves.png",  # a file another rule makes: 'Rules plot_curves and restored are ambiguous'
        restoring.MARKER,  # the restore's own record
        "results/zeros.bin",
        f"results/runs/{'a' * 300}/metrics.json",  # a folder name over the file system's limit
        f"results/runs/{RUN}/model.keras.tmp",
    ],
)
def test_the_manifest_names_only_files_a_bundle_of_this_config_carries(good, work, tmp_path, name):
    archive, config = good
    bad = repack(tmp_path, relisted(members(archive), {name: b"\x89PNG\r\n\x1a\nx"}))
    message = refused(work, config, bad)
    assert "not a file that a results bundle of this config carries" in message
    assert name[:150] in message and "a" * 250 not in message  # long names are quoted to 200 characters


def test_a_file_listed_under_another_run_is_refused(good, work, tmp_path):
    archive, config = good
    contents = members(archive)
    manifest = json.loads(contents[bundle.MANIFEST])
    for entry in manifest["files"]:
        if entry["path"] == f"results/runs/{RUN}/metrics.json":
            entry["run"] = EXPLAINED
    bad = repack(tmp_path, contents | {bundle.MANIFEST: json.dumps(manifest).encode()})
    assert f"a file of run {RUN}, listed as one of {EXPLAINED}" in refused(work, config, bad)


# --- fields of the wrong type -------------------------------------------------------------------------


def manifest_with(contents: dict[str, bytes], change) -> dict[str, bytes]:
    """Bundle contents whose manifest `change` (a function of the manifest dict) has edited."""
    manifest = json.loads(contents[bundle.MANIFEST])
    change(manifest)
    return contents | {bundle.MANIFEST: json.dumps(manifest).encode()}


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda m: m["files"][0].update(run=["a", "list"]), "files[0].run"),
        (lambda m: m.update(git="a string"), "git"),
        (lambda m: m.update(config=["a", "list"]), "config"),
        (lambda m: m["files"][0].update(bytes="12"), "files[0].bytes"),
        (lambda m: m["files"][0].update(sha256="../" * 30), "files[0].sha256"),
        (lambda m: m["runs"].update({"../x": {}}), "runs"),
        (lambda m: m.update(format=2), "format"),
        (lambda m: m.update(extra="x"), "<top level>"),
    ],
)
def test_a_manifest_field_of_the_wrong_type_is_named(good, work, tmp_path, change, field):
    archive, config = good
    bad = repack(tmp_path, manifest_with(members(archive), change))
    message = refused(work, config, bad)
    assert f"{bundle.MANIFEST}: {field}" in message, message


@pytest.mark.parametrize(
    "data, problem",
    [
        (b'["a", "list"]', "<top level>: ['a', 'list'] is not of type 'object'"),
        (b'{"dataset": 5, "datasets": {}}', "not a config of this workflow: invalid config"),
    ],
)
def test_a_config_json_that_is_not_a_config_is_refused(good, work, tmp_path, data, problem):
    archive, config = good
    contents = relisted(members(archive) | {bundle.CONFIG: data}, {})  # the manifest lists the new config's hash
    message = refused(work, config, repack(tmp_path, contents))
    assert f"{bundle.CONFIG}: {problem}" in message, message


# --- content that is not what the workflow writes -----------------------------------------------------

EXFILTRATE = r"\pdfcompresslevel=0 \immediate\pdfobj stream file {/etc/os-release}\pdfrefobj\pdflastobj"


def json_with(contents: dict[str, bytes], name: str, change) -> dict[str, bytes]:
    """Bundle contents with the JSON member `name` edited by `change`, relisted with its new hash."""
    record = json.loads(contents[name])
    change(record)
    return relisted(contents, {name: json.dumps(record).encode()})


@pytest.mark.parametrize(
    "name, change, named",
    [
        (PROVENANCE, lambda r: r.update(config_sha256=EXFILTRATE), "config_sha256"),
        (PROVENANCE, lambda r: r["data_files"][0].update(md5=r"\input{/etc/hostname}"), "data_files[0].md5"),
        (PROVENANCE, lambda r: r["data_files"][0].update(bytes=r"\input{/etc/hostname}"), "data_files[0].bytes"),
        (PROVENANCE, lambda r: r["report_assembled_on"].update(cpus="\\input x"), "report_assembled_on.cpus"),
        (
            PROVENANCE,
            lambda r: r["report_assembled_on"].update(memory_gib="1"),
            "report_assembled_on.memory_gib",
        ),
        (PROVENANCE, lambda r: r["training_hosts"][RUN][0].update(epochs=[EXFILTRATE]), "epochs[0]"),
        (PROVENANCE, lambda r: r["training_hosts"][RUN][0].update(hostname="x" * 5000), "hostname"),
        (PROVENANCE, lambda r: r["training_hosts"].update(other=[]), "training_hosts"),
        (PROVENANCE, lambda r: r.update(extra="x"), "<top level>"),
        (f"results/runs/{RUN}/metrics.json", lambda r: r["class_names"].__setitem__(0, EXFILTRATE), "class_names"),
        (f"results/runs/{RUN}/metrics.json", lambda r: r.update(accuracy=1.5), "accuracy"),
        (f"results/runs/{RUN}/metrics.json", lambda r: r["confusion_matrix"].pop(), "confusion_matrix"),
        (f"results/runs/{RUN}/host.json", lambda r: r.update(run=EXPLAINED), f"run {EXPLAINED}"),
        (f"results/runs/{RUN}/bootstrap.json", lambda r: r.update(n_boot=2.5), "n_boot"),
    ],
)
def test_a_json_file_that_breaks_its_schema_is_refused_naming_the_field(good, work, tmp_path, name, change, named):
    archive, config = good
    bad = repack(tmp_path, json_with(members(archive), name, change))
    message = refused(work, config, bad)
    assert f"{name}: " in message and named in message, message
    assert len(message) < 2000 and "x" * 300 not in message  # outside values are quoted briefly


@pytest.mark.parametrize(
    "name, data, named",
    [
        (f"results/runs/{RUN}/history.csv", b"epoch,loss\n1,\\input{/etc/hostname}\n", "column loss"),
        (f"results/runs/{RUN}/history.csv", b"epoch,loss\n0.5,1\n", "epoch 0.5"),
        (f"results/runs/{RUN}/history.csv", b"epoch,Loss Here\n1,1\n", "column name"),
        (f"results/runs/{RUN}/history.csv", b"epoch,loss\n1,2,3\n", "line 2"),
        (f"results/runs/{RUN}/history.csv", b"\xff\xfe", "not a CSV file"),
        (f"benchmarks/train/{RUN}.tsv", b"s\th:m:s\n1\t\\input x\n", "h:m:s"),
        (f"results/gradcam/{EXPLAINED}/focus.csv", b"class,n_images\nbasophil,1\n", "columns"),
        (f"results/runs/{RUN}/predictions.npz", npz(labels=np.array([{"a": 1}], dtype=object)), "Python objects"),
        (f"results/runs/{RUN}/predictions.npz", b"PK\x03\x04 not a zip", "not a readable zip file"),
        (f"results/gradcam/{EXPLAINED}/panel.png", b"<svg onload=alert(1)>", "not a PNG file"),
        (f"results/gradcam/{EXPLAINED}/panel.pdf", b"%!PS", "not a PDF file"),
    ],
)
def test_a_text_or_binary_file_that_is_not_what_the_workflow_writes_is_refused(good, work, tmp_path, name, data, named):
    archive, config = good
    bad = repack(tmp_path, relisted(members(archive), {name: data}))
    message = refused(work, config, bad)
    assert f"{name}: " in message and named in message, message


def test_a_focus_table_of_other_classes_is_refused(good, work, tmp_path):
    archive, config = good
    name = f"results/gradcam/{EXPLAINED}/focus.csv"
    contents = members(archive)
    data = contents[name].replace(b"\nbasophil,", b"\n\\input{/etc/hostname},")
    assert "classes" in refused(work, config, repack(tmp_path, relisted(contents, {name: data})))


# --- sizes --------------------------------------------------------------------------------------------


def long_header_bundle(path: Path, kind: bytes, size: int = 1 << 30) -> None:
    """A .tar.gz of one PAX ('x') or GNU long-name ('L') header of `size` bytes, then a member: about 1 MB on disk.
    Each 1 MiB of the header is deflated after a full flush, so its compressed bytes repeat and are made once."""
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = kind, size
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate inside a hand-made gzip frame
    chunk = b"a" * (1 << 20)
    crc = 0
    with open(path, "wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        head = info.tobuf(format=tarfile.GNU_FORMAT)
        out.write(compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH))
        crc = zlib.crc32(head, crc)
        piece = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
        for _ in range(size // len(chunk)):
            out.write(piece)
            crc = zlib.crc32(chunk, crc)
        tail = tarfile.TarInfo(f"results/runs/{RUN}/metrics.json").tobuf(format=tarfile.GNU_FORMAT) + bytes(1024)
        out.write(compressor.compress(tail) + compressor.flush(zlib.Z_FINISH))
        crc = zlib.crc32(tail, crc)
        total = len(head) + size + len(tail)
        out.write(crc.to_bytes(4, "little") + (total % (1 << 32)).to_bytes(4, "little"))


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_a_one_gib_header_is_refused_fast_in_little_memory(tmp_path, kind):
    bomb = tmp_path / "bomb.tar.gz"
    long_header_bundle(bomb, kind)
    assert bomb.stat().st_size < 2_000_000
    with gzip.open(bomb) as stream:  # the bomb is a well-formed archive: all of it decompresses
        stream.seek(512 + (1 << 30))
        assert stream.read(512)[:40].startswith(b"results/runs/")
    # The peak is the new process's VmHWM: getrusage's ru_maxrss keeps the parent's resident size from the fork, and
    # a pytest worker that has imported TensorFlow holds 2 GB.
    probe = (
        "import re, sys, time\n"
        "from pathlib import Path\n"
        "from bloodcells import bundle\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    bundle.verify_bundle(Path(sys.argv[1]))\n"
        "except bundle.BundleError as error:\n"
        "    message = str(error)\n"
        "peak = re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text()).group(1)\n"
        "print(time.monotonic() - start, peak, len(message), message)\n"
    )
    env = {"PYTHONPATH": str(REPO / "scripts"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True, env=env, check=True
    )
    seconds, peak_kib, length, message = result.stdout.split(" ", 3)
    assert "1073741824 bytes" in message and "nothing was restored" in message
    assert float(seconds) < 5 and int(peak_kib) < 200 * 1024 and int(length) < 1000, result.stdout


def test_more_than_restore_max_bytes_unpacked_is_refused_before_anything_is_read(good, work, tmp_path):
    archive, config = good
    big = f"results/runs/{RUN}/history.csv"
    data = b"epoch,loss\n" + b"1,0.5\n" * 100_000  # 600 kB that compress to a few kB
    bad = repack(tmp_path, relisted(members(archive), {big: data}))
    assert bad.stat().st_size < 50_000
    message = refused(work, config, bad, restore_max_bytes=300_000)
    assert "more than 300000 bytes unpacked (config key restore_max_bytes)" in message


def test_the_member_count_is_bounded(tmp_path, monkeypatch):
    archive = repack(tmp_path, {f"results/x{n}": b"" for n in range(30)})
    monkeypatch.setattr(tar_limits, "MAX_MEMBERS", 20)
    with pytest.raises(tar_limits.TarLimitError, match="more than 20 members"):
        tar_limits.check_tar_headers(archive, 1 << 20, tar_limits.MAX_MEMBERS)


def test_a_sparse_member_is_refused(tmp_path):
    info = tarfile.TarInfo("results/x")
    info.type = tarfile.GNUTYPE_SPARSE
    with gzip.open(tmp_path / "sparse.tar.gz", "wb") as out:
        out.write(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024))
    with pytest.raises(tar_limits.TarLimitError, match="GNU sparse file"):
        tar_limits.check_tar_headers(tmp_path / "sparse.tar.gz", 1 << 20)


# --- failures midway: all or nothing ------------------------------------------------------------------


def test_a_member_that_vanishes_after_verification_leaves_nothing(good, work, tmp_path, monkeypatch):
    archive, config = good
    copy = tmp_path / "copy.tar.gz"
    copy.write_bytes(archive.read_bytes())
    verify = bundle.verify_bundle

    def verify_then_swap(path, max_bytes):
        checked = verify(path, max_bytes)
        contents = members(path)
        del contents[f"results/runs/{RUN}/predictions.npz"]  # the last of the bundle's files goes missing
        repack(tmp_path, contents).replace(path)
        return checked

    monkeypatch.setattr(restoring, "verify_bundle", verify_then_swap)
    message = refused(work, config, copy)
    assert f"results/runs/{RUN}/predictions.npz vanished from the bundle since it was verified" in message


@pytest.mark.parametrize("failing, after", [("utime", 40), ("replace", 60)])
def test_a_full_disk_while_unpacking_or_placing_leaves_nothing(good, work, monkeypatch, failing, after):
    # utime runs once per file unpacked into the staging folder, replace once per file moved into place
    archive, config = good
    real, calls = getattr(staging.os, failing), []

    def full_disk(*args, **kwargs):
        calls.append(args)
        if len(calls) == after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(staging.os, failing, full_disk)
    message = refused(work, config, archive)
    assert "No space left on device" in message and len(calls) == after
    assert not list(work.glob(staging.STAGING_PREFIX + "*"))


def test_a_record_that_cannot_be_written_undoes_the_restore(good, work, monkeypatch):
    archive, config = good

    def no_record(*args, **kwargs):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(restoring, "record_restore", no_record)
    assert "Disk quota exceeded" in refused(work, config, archive)


def test_a_recorded_file_that_no_bundle_carries_stands_for_no_job(good, work):
    # a record (edited, or of another config) may list a file another rule makes (curves.png): it is ignored,
    # so rule restored never competes with plot_curves ('Rules plot_curves and restored are ambiguous')
    archive, config = good
    restored = restore(work, config, restore=str(archive))
    marker = json.loads((work / restoring.MARKER).read_text())
    marker["files"][f"results/runs/{RUN}/curves.png"] = 9
    (work / restoring.MARKER).write_text(json.dumps(marker))
    assert restore(work, config) == restored
    assert "curves.png" not in restoring.restored_pattern(restore(work, config))


def test_a_file_larger_than_its_kind_is_refused_before_anything_is_unpacked(good, work, tmp_path, monkeypatch):
    # 300 MB of zeros as predictions.npz pack into a 300 kB bundle: refused on the manifest's size, nothing written
    archive, config = good
    name = f"results/runs/{RUN}/predictions.npz"
    bad = repack(tmp_path, relisted(members(archive), {name: bytes(300 << 20)}))
    assert bad.stat().st_size < 1_000_000
    monkeypatch.setattr(staging, "extract", lambda *args: pytest.fail("unpacked"))
    message = refused(work, config, bad)
    assert f"{name}: 314572800 bytes, more than the 268435456 a .npz file of a bundle may have" in message
