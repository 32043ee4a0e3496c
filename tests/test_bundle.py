"""Results bundles: `snakemake bundle` packs a build's results; config key restore verifies a bundle and unpacks it
before planning, so a report is rebuilt with no training; a bundle that does not match its manifest, or plans other
runs, is refused before anything is written."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import tarfile
import threading
import zlib
from pathlib import Path

import pytest
import yaml
from bundles import fake_build, fake_bundle, members, relisted, repack, restore, tiny_config
from conftest import REPO, SCHEMA, TINY, run_snakemake

from bloodcells import bundle, bundle_contents, plan, restoring
from bloodcells.config import ConfigError, validate_config
from bloodcells.latex import latex_escape

# Jobs that need a model, the data or the network: none of them may run after a restore.
EXPENSIVE = {
    "train",
    "evaluate",
    "gradcam",
    "transfer",
    "prepare_dataset",
    "download_medmnist",
    "download_weights",
    "synthesize_folder",
}


@pytest.fixture
def made(tmp_path) -> tuple[Path, dict, dict]:
    """A bundle of a fake tiny build: (its path, the config, the manifest)."""
    config = tiny_config()
    archive, manifest = fake_bundle(tmp_path, config)
    return archive, config, manifest


def written(root: Path) -> list[str]:
    """Every file and folder under root/results and root/benchmarks."""
    return sorted(str(path.relative_to(root)) for folder in bundle.ROOTS for path in (root / folder).rglob("*"))


# --- making a bundle --------------------------------------------------------------------------------


def test_bundle_holds_every_file_the_tables_and_report_need_and_a_manifest(made):
    archive, config, manifest = made
    names = set(members(archive))
    run = "synthetic-32-resnet101-bs16-s0"  # the explained run, the tiny config's poster model
    expected = {f"results/runs/{run}/{name}" for name in bundle_contents.RUN_FILES}
    expected |= {f"results/gradcam/{run}/{name}" for name in bundle_contents.GRADCAM_FILES}
    expected |= {f"benchmarks/train/{run}.tsv", bundle_contents.PROVENANCE, "results/figures/montage_synthetic.png"}
    expected |= {"results/transfer/synthetic-32-resnet50-bs16-s0/raabin/metrics.json", bundle.MANIFEST, bundle.CONFIG}
    assert expected <= names
    assert not any(name.endswith("model.keras") for name in names)  # models only with bundle_models
    assert manifest["runs"] == bundle.json_roundtrip(plan.make_plan(config).runs) and len(manifest["runs"]) == 11
    assert manifest["git"]["commit"] == "0" * 40
    assert [entry["path"] for entry in manifest["files"]] == sorted(names - {bundle.MANIFEST, bundle.CONFIG})
    with tarfile.open(archive, "r:gz") as tar:
        assert tar.getmembers()[0].name == bundle.MANIFEST  # read first, whatever the bundle's size
    assert json.loads(members(archive)[bundle.CONFIG]) == bundle_contents.results_config(config)


def test_models_are_bundled_with_the_switch():
    config = tiny_config(bundle_models=True)
    paths = bundle_contents.bundled_files(config, plan.make_plan(config), models=True)
    assert sum(path.endswith("/model.keras") for path in paths) == 11
    # the bundle keys change neither the config a bundle records nor the hash in the provenance
    plain_config = tiny_config()
    with_keys = tiny_config(
        bundle_models=True, restore="b.tar.gz", restore_sha256="0" * 64, restore_shared_runs=True, restore_max_bytes=9
    )
    assert bundle_contents.results_config(with_keys) == bundle_contents.results_config(plain_config) == plain_config


def test_a_missing_result_is_named_and_no_bundle_is_written(tmp_path):
    config = tiny_config()
    paths = fake_build(tmp_path, config)
    gone = next(path for path in paths if path.endswith("predictions.npz"))
    (tmp_path / gone).unlink()
    dest = tmp_path / bundle.BUNDLE_FILE
    with pytest.raises(bundle.BundleError, match=re.escape(gone)):
        bundle.write_bundle(dest, tmp_path, paths, {}, {}, {}, False)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


# --- restoring --------------------------------------------------------------------------------------


def test_restore_puts_every_file_in_place_with_one_mtime_and_the_next_parse_reads_nothing(made, tmp_path, monkeypatch):
    archive, config, manifest = made
    root = tmp_path / "fresh"
    root.mkdir()
    restored = restore(root, config, restore=str(archive))
    assert set(restored.runs) == set(manifest["runs"])
    for entry in manifest["files"]:
        assert hashlib.sha256((root / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert len({(root / path).stat().st_mtime for path in restored.files}) == 1
    assert (root / restoring.MARKER).is_file()

    def no_reading(*args):
        raise AssertionError("the bundle was read again")

    monkeypatch.setattr(restoring, "verify_bundle", no_reading)
    assert restore(root, config, restore=str(archive)) == restored
    # a restored file that went missing is restored again (the others are left as they are)
    monkeypatch.undo()
    lost = root / manifest["files"][0]["path"]
    lost.unlink()
    assert restore(root, config, restore=str(archive)) == restored and lost.is_file()
    # a command without the key keeps the restored files standing for their jobs, until the record is deleted
    assert restore(root, config) == restored
    (root / restoring.MARKER).unlink()
    assert restore(root, config) == restoring.Restored()


@pytest.mark.parametrize(
    "tamper, named, problem",
    [
        ("byte", "results/runs/synthetic-32-resnet50-bs16-s0/metrics.json", "is not the manifest's"),
        ("missing", "results/runs/synthetic-32-resnet50-bs16-s0/history.csv", "missing from the archive"),
        ("extra", "results/runs/synthetic-32-resnet50-bs16-s0/extra.txt", "not in the manifest"),
        ("dotdot", "../x", "escapes the results folder"),
        ("dotdot_inside", "results/../../x", "escapes the results folder"),
        ("absolute", "/tmp/x", "an absolute path"),
        ("outside", "scripts/bloodcells/bundle.py", "outside the folders"),
        ("symlink", "results/runs/synthetic-32-resnet50-bs16-s0/link.json", "a symbolic link"),
    ],
)
def test_a_bundle_that_does_not_match_its_manifest_is_refused_before_writing(made, tmp_path, tamper, named, problem):
    archive, config, _ = made
    contents, links = members(archive), {}
    if tamper == "byte":
        data = bytearray(contents[named])
        data[5] ^= 1
        contents[named] = bytes(data)
    elif tamper == "missing":
        del contents[named]
    elif tamper == "extra":
        contents[named] = b"not listed"
    elif tamper == "symlink":
        links[named] = "/etc/passwd"
    else:  # a listed, correctly hashed file whose path leaves results/
        contents = relisted(contents, {named: b"escaped"})
    bad = repack(tmp_path, contents, links)
    root = tmp_path / "fresh"
    root.mkdir()
    with pytest.raises(bundle.BundleError) as error:
        restore(root, config, restore=str(bad))
    message = str(error.value)
    assert named in message and problem in message and "nothing was restored" in message, message
    assert list(root.iterdir()) == [] and not (tmp_path / "x").exists()


def test_an_unreadable_bundle_is_named(tmp_path):
    bad = tmp_path / "bundle.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(bundle.BundleError, match=re.escape(str(bad))):
        restore(tmp_path, tiny_config(), restore=str(bad))
    with pytest.raises(bundle.BundleError, match="does not exist"):
        restore(tmp_path, tiny_config(), restore=str(tmp_path / "nowhere.tar.gz"))
    assert written(tmp_path) == []


def test_a_wrong_restore_sha256_of_a_local_bundle_is_refused(made, tmp_path):
    archive, config, _ = made
    with pytest.raises(bundle.BundleError, match="restore_sha256"):
        restore(tmp_path / "x", config, restore=str(archive), restore_sha256="ab" * 32)
    restore(tmp_path, config, restore=str(archive), restore_sha256=bundle.file_sha256(archive))


def test_files_already_there_with_other_content_are_never_overwritten(made, tmp_path):
    archive, config, manifest = made
    root = tmp_path / "work"
    mine = root / manifest["files"][3]["path"]
    mine.parent.mkdir(parents=True)
    mine.write_text("computed here")
    before = written(root)
    with pytest.raises(bundle.BundleError) as error:
        restore(root, config, restore=str(archive))
    assert manifest["files"][3]["path"] in str(error.value) and "other content" in str(error.value)
    assert written(root) == before and mine.read_text() == "computed here"


def other_runs_config() -> dict:
    """The tiny config with one more seed and without the dropout study: other runs than the bundle's."""
    config = yaml.safe_load(TINY.read_text())
    del config["studies"]["dropout"]
    config["seeds"] = [0, 1]
    return validate_config(config, SCHEMA)


def test_a_bundle_of_other_runs_is_refused_with_the_runs_that_differ(made, tmp_path):
    archive, _, _ = made
    with pytest.raises(bundle.BundleError) as error:
        restore(tmp_path, other_runs_config(), restore=str(archive))
    message = str(error.value)
    assert "synthetic-32-resnet50-bs16-do0.5-s0: in the bundle, not planned by this config" in message
    assert "synthetic-32-resnet50-bs16-s1: planned by this config, not in the bundle" in message
    assert "restore_shared_runs" in message and "nothing was restored" in message
    assert written(tmp_path) == []


def test_with_restore_shared_runs_the_runs_both_plan_are_restored(made, tmp_path):
    archive, _, manifest = made
    config = other_runs_config()
    restored = restore(tmp_path, config, restore=str(archive), restore_shared_runs=True)
    shared = set(manifest["runs"]) & set(plan.make_plan(config).runs)
    assert set(restored.runs) == shared and len(shared) == 10
    assert not (tmp_path / "results/runs/synthetic-32-resnet50-bs16-do0.5-s0").exists()
    assert (tmp_path / "results/runs/synthetic-32-resnet50-bs16-s0/predictions.npz").is_file()
    # this config plans runs the bundle lacks: provenance and the montage are made here, with them
    assert not (tmp_path / bundle_contents.PROVENANCE).exists()


# --- restoring from a URL ---------------------------------------------------------------------------


class Server:
    """A loopback HTTP server of one file (as tests/test_sources.py's), counting requests."""

    def __init__(self, body: bytes, location: str | None = None) -> None:
        self.body, self.hits, self.location = body, 0, location
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                if server.location:  # a redirect, not the bundle
                    self.send_response(302)
                    self.send_header("Location", server.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/results-bundle.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(made):
    """The bundle of `made` on a loopback server: (server, config, manifest)."""
    archive, config, manifest = made
    server = Server(archive.read_bytes())
    yield server, config, manifest
    server.close()


def test_restore_from_a_url_checks_the_sha256(served, tmp_path):
    server, config, manifest = served
    good = hashlib.sha256(server.body).hexdigest()
    root = tmp_path / "fresh"
    root.mkdir()
    with pytest.raises(bundle.BundleError) as error:
        restore(root, config, restore=server.url, restore_sha256="0" * 64)
    assert server.url in str(error.value) and good in str(error.value) and "nothing was restored" in str(error.value)
    assert list(root.iterdir()) == []
    with pytest.raises(bundle.BundleError, match="restore_sha256"):
        restore(root, config, restore=server.url)
    restored = restore(root, config, restore=server.url, restore_sha256=good.upper())
    assert len(restored.files) == len(manifest["files"]) and server.hits == 2
    # the next parse (the next command, a cluster job) downloads nothing
    assert restore(root, config, restore=server.url, restore_sha256=good) == restored and server.hits == 2


def test_a_url_bundle_over_restore_max_bytes_is_refused_unread(served, tmp_path):
    server, config, manifest = served
    good = hashlib.sha256(server.body).hexdigest()
    limit = len(server.body) - 1
    with pytest.raises(bundle.BundleError) as error:
        restore(tmp_path, config, restore=server.url, restore_sha256=good, restore_max_bytes=limit)
    message = str(error.value)
    assert "restore_max_bytes" in message and f"Content-Length of {len(server.body):,} bytes" in message
    assert f"limit of {limit:,} bytes" in message and written(tmp_path) == []
    # the same limit bounds the unpacked size too, which is larger than the download
    restored = restore(tmp_path, config, restore=server.url, restore_sha256=good, restore_max_bytes=1 << 20)
    assert len(restored.files) == len(manifest["files"])
    for bad in (0, "8GB"):
        with pytest.raises(ConfigError, match="restore_max_bytes"):
            tiny_config(restore_max_bytes=bad)


def test_a_url_bundle_redirected_to_another_host_is_refused_before_it_is_requested(served, tmp_path):
    server, config, manifest = served
    # the same server under another name: a request to it would be counted in server.hits
    moved = Server(b"", location=server.url.replace("127.0.0.1", "localhost"))
    try:
        with pytest.raises(bundle.BundleError) as error:
            restore(tmp_path, config, restore=moved.url, restore_sha256=hashlib.sha256(server.body).hexdigest())
    finally:
        moved.close()
    message = str(error.value)
    assert "config key restore" in message and moved.url in message and moved.location in message
    assert "another host" in message and moved.hits == 1 and server.hits == 0 and written(tmp_path) == []


def test_only_https_urls_are_fetched(tmp_path):
    with pytest.raises(bundle.BundleError, match="https"):
        restore(tmp_path, tiny_config(), restore="ftp://example.org/b.tar.gz", restore_sha256="0" * 64)
    with pytest.raises(bundle.BundleError, match="https"):
        restore(tmp_path, tiny_config(), restore="http://example.org/b.tar.gz", restore_sha256="0" * 64)
    assert written(tmp_path) == []


# --- the workflow -----------------------------------------------------------------------------------


def job_counts(result) -> dict[str, int]:
    """Rule -> jobs from the 'Job stats' table a Snakemake run or dry run prints; empty when nothing is to be done."""
    output = result.stdout + result.stderr
    if "Job stats:" not in output:
        assert "Nothing to be done" in output, output[-3000:]
        return {}
    table = output.split("Job stats:")[1].split("\n\n")[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE))
    return {rule: int(count) for rule, count in counts.items() if rule != "total"}


@pytest.fixture(scope="module")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """The session's tiny run packed by `snakemake bundle`, in a hard-linked copy (the tiny run is shared)."""
    work = tmp_path_factory.mktemp("bundled")
    for folder in bundle.ROOTS:
        shutil.copytree(tiny_run / folder, work / folder, copy_function=os.link)
    # mtime only: other tests edit the repository's templates while the tiny run is shared; packing is not rebuilding
    result = run_snakemake(work, "bundle", "--cores", "1", "--configfile", str(TINY), "--rerun-triggers", "mtime")
    assert job_counts(result) == {"bundle": 1}
    return work / bundle.BUNDLE_FILE


def test_report_rebuilt_from_a_bundle_in_a_fresh_folder_trains_nothing(tiny_run, tiny_bundle, tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    args = ["--configfile", str(TINY), "--config", f"restore={tiny_bundle}"]
    # no .snakemake metadata, new modification times: only what the bundle lacks is planned
    planned = job_counts(run_snakemake(fresh, "-n", "--cores", "2", *args))
    assert not EXPENSIVE & set(planned), planned
    assert {"tables_grid", "study_table", "statistics", "report"} <= set(planned), planned
    assert "bootstrap" not in planned and "provenance" not in planned and "montage" not in planned
    ran = job_counts(run_snakemake(fresh, "--cores", "2", *args))
    assert ran == planned
    assert not (fresh / "results/data").exists() and not list(fresh.glob("results/runs/*/model.keras"))
    original = sorted((tiny_run / "results/tables").glob("*.csv"))
    assert len(original) >= 8
    for table in original:
        assert (fresh / "results/tables" / table.name).read_bytes() == table.read_bytes(), table.name
    for name in ("significance.csv", "bootstrap.csv"):
        assert (fresh / "results/stats" / name).read_bytes() == (tiny_run / "results/stats" / name).read_bytes()
    assert (fresh / "results/report/report.html").is_file()
    assert job_counts(run_snakemake(fresh, "-n", "--cores", "2", *args)) == {}
    # nor does a later command that leaves out the restore key
    assert job_counts(run_snakemake(fresh, "-n", "--cores", "2", "--configfile", str(TINY))) == {}


def test_restored_files_older_than_every_script_are_not_rebuilt(made, tmp_path):
    # After a restore, a git pull gives scripts newer modification times. Snakemake reruns a script rule whose output
    # is older than its script, deleting the output first: rule restored must run no script, or that would delete
    # every restored file. A dry run reads no file's content, so the fake build's bundle serves.
    archive, _, _ = made
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    args = ["-n", "--configfile", str(TINY), "--config", f"restore={archive}"]
    assert not EXPENSIVE & set(job_counts(run_snakemake(fresh, *args)))
    oldest = min(path.stat().st_mtime for path in (REPO / "scripts").rglob("*.py")) - 3600
    for path in json.loads((fresh / restoring.MARKER).read_text())["files"]:
        os.utime(fresh / path, (oldest, oldest))
    planned = job_counts(run_snakemake(fresh, *args))
    assert "restored" not in planned and not EXPENSIVE & set(planned), planned


def test_a_tampered_bundle_stops_the_workflow_naming_the_file(tiny_bundle, tmp_path):
    contents = members(tiny_bundle)
    name = next(name for name in contents if name.endswith("/metrics.json"))
    bad = repack(tmp_path, contents | {name: contents[name] + b" "})
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    result = run_snakemake(fresh, "-n", "--configfile", str(TINY), "--config", f"restore={bad}", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and name in output and "nothing was restored" in output, output[-3000:]
    assert written(fresh) == []


# --- a bundle that tries to run TeX code ----------------------------------------------------------------


def payloads(secret: Path) -> list[str]:
    """Text that would read `secret` into the PDF if a template printed it unescaped (each under 200 characters)."""
    return [
        rf"\input{{{secret}}}",
        rf"\pdfcompresslevel=0 \immediate\pdfobj stream file {{{secret}}}\pdfrefobj\pdflastobj",
        rf"^^5cinput{{{secret}}}",
        rf"</td><script>document.write('{secret}')</script>",
    ]


def planted(value, texts: list[str], counter: list[int]):
    """`value` with every string (keys aside) replaced by the next of `texts`, in turn; other values as they are."""
    if isinstance(value, dict):
        return {key: planted(item, texts, counter) for key, item in value.items()}
    if isinstance(value, list):
        return [planted(item, texts, counter) for item in value]
    if isinstance(value, str):
        counter[0] += 1
        return texts[counter[0] % len(texts)]
    return value


def pdf_text(pdf: bytes) -> bytes:
    """A PDF's bytes with every Flate stream decompressed after it, so that text inside streams can be searched."""
    inflated = [pdf]
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", pdf, flags=re.DOTALL):
        with contextlib.suppress(zlib.error):
            inflated.append(zlib.decompressobj().decompress(stream))
    return b"\n".join(inflated)


def test_a_bundle_planting_tex_in_every_text_field_leaks_nothing_into_the_report(tiny_bundle, tmp_path):
    secret = tmp_path / "secret.txt"
    token = "".join(str((7 * n + 3) % 10) for n in range(24))  # digits: no kerning splits them in the PDF's text
    secret.write_text(token)
    texts = payloads(secret)
    contents = members(tiny_bundle)
    provenance = json.loads(contents[bundle_contents.PROVENANCE])
    # every field of the provenance whose schema allows text; digests, counts and times only pass as what they are
    changed = {"git": {"commit": texts[0], "dirty": None}, "versions": planted(provenance["versions"], texts, [0])}
    changed["data_files"] = [entry | {"path": texts[1]} for entry in provenance["data_files"]]
    host_texts = {"hostname", "os", "cpu", "tensorflow", "cuda_build", "cudnn_build", "cuda_visible_devices"}
    host_texts |= {"slurm_job_nodelist", "slurm_job_id"}
    changed["training_hosts"] = {
        run: [session | {key: texts[n % 4] for n, key in enumerate(sorted(host_texts))} for session in sessions]
        for run, sessions in provenance["training_hosts"].items()
    }
    assembled = provenance["report_assembled_on"]
    changed["report_assembled_on"] = assembled | {"hostname": texts[2], "os": texts[3], "cpu": texts[0]}
    changed["report_assembled_on"] |= {"gpus_tensorflow_sees": texts, "gpus_machine": texts, "cuda_build": texts[1]}
    record = json.dumps(provenance | changed).encode()
    config = json.loads(contents[bundle.CONFIG])
    config["gradcam"] = planted(config["gradcam"], texts, [0])  # the bundle's config is only compared, never shown
    bad = repack(
        tmp_path,
        relisted(contents | {bundle.CONFIG: json.dumps(config).encode()}, {bundle_contents.PROVENANCE: record}),
    )
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_snakemake(fresh, "--cores", "2", "--configfile", str(TINY), "--config", f"restore={bad}")
    report = fresh / "results/report"
    html = (report / "report.html").read_text()
    assert "&lt;script&gt;" in html and "<script>document.write" not in html  # shown, escaped
    assert latex_escape(texts[0]) in (report / "report.tex").read_text()  # the payloads reached the report, as text
    if (report / "report.pdf").exists() or os.environ.get("BLOODCELLS_REQUIRE_REPORT_TOOLS") == "1":
        pdf = (report / "report.pdf").read_bytes()
        assert token.encode() not in pdf_text(pdf)
    assert token not in html
