"""The report as the workflow builds it on the tiny config: contents, PDF, browser, Snakemake's own report, and
that editing a template reruns only the report rules."""

import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from browser import chromium_binary, load_page, screenshot_is_blank
from conftest import REPO, TINY, editing_repository, run_snakemake
from test_report import require_tool

GRID = [f"synthetic-32-{a}-bs{b}-s0" for a in ("resnet50", "resnet101") for b in (16, 32)]


def pdf_expected() -> bool:
    """Whether the workflow must have built the PDF: TeX is installed, or CI requires it (then its absence fails)."""
    required = os.environ.get("BLOODCELLS_REQUIRE_REPORT_TOOLS") == "1"
    return required or bool(shutil.which("latexmk") and shutil.which("pdflatex"))


def test_report_built_by_the_workflow(tiny_run):
    html = (tiny_run / "results/report/report.html").read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == 1 + 1 + 4 + 4 + 1  # montage, compared,
    # curves and confusion matrices of the 4 grid runs, 1 Grad-CAM panel
    for run in GRID:
        assert f"Confusion matrix of {run}" in html
    for title in ("Table 1:", "Table 2:", "Table 3:", "Table 4:", "Batch size comparison", "Dropout rate comparison"):
        assert title in html, title
    assert "synthetic demo cells" in html and "config.yaml" not in html.split("Rebuilding this report")[1][:20]
    if pdf_expected():
        assert (tiny_run / "results/report/report.pdf").read_bytes().startswith(b"%PDF")
    else:
        reason = (tiny_run / "results/report/report_pdf_not_built.txt").read_text()
        assert "latexmk and pdflatex were not found" in reason


def test_training_hosts_recorded_per_run_and_shown(tiny_run):
    import json
    import socket

    provenance = json.loads((tiny_run / "results/report/provenance.json").read_text())
    runs = sorted(path.parent.name for path in (tiny_run / "results/runs").glob("*/model.keras"))
    assert sorted(provenance["training_hosts"]) == runs and len(runs) == 11
    for run in runs:
        host = json.loads((tiny_run / f"results/runs/{run}/host.json").read_text())
        assert host["run"] == run and provenance["training_hosts"][run] == host["sessions"]
        [session] = host["sessions"]  # trained once, uninterrupted: one session, the run's one epoch
        assert session["epochs"] == [1] and session["hostname"] == socket.gethostname()
        assert (session["xla"], session["mixed_precision"], session["threads"]) == (False, False, 1)  # CPU, tiny.yaml
        assert session["gpus_tensorflow"] == [] and session["tensorflow"] == provenance["versions"]["tensorflow"]
    assert provenance["report_assembled_on"]["hostname"] == socket.gethostname() and "hardware" not in provenance
    html = (tiny_run / "results/report/report.html").read_text()
    hosts = html.split('id="training-hosts"')[1].split("</table>")[0]
    for run in runs:
        assert f"<tr><td><code>{run}</code></td><td>{socket.gethostname()}</td><td>CPU: " in hosts, run
    assert r"\textbf{Training hosts}" in (tiny_run / "results/report/report.tex").read_text()


def test_workflow_report_in_headless_chromium(tiny_run):
    require_tool(chromium_binary() is not None, "chromium")
    page = load_page(tiny_run / "results/report/report.html")
    assert len(page.images) == 11 and page.broken_images == [] and page.console_errors == []
    assert not screenshot_is_blank(page.screenshot)


def planned_jobs(workdir: Path) -> set[str]:
    """The rules a dry run would run now."""
    result = run_snakemake(workdir, "-n", "--cores", "1", "--configfile", str(TINY))
    table = result.stdout.split("Job stats:")[1].split("\n\n")[0] if "Job stats:" in result.stdout else ""
    return {line.split()[0] for line in table.splitlines()[3:] if line.strip() and line.split()[0] != "total"}


@pytest.mark.parametrize(
    "template, expected",
    [
        ("paper/report.tex.j2", {"report", "report_pdf"}),
        ("paper/macros.html.j2", {"report", "report_pdf", "tables_grid", "study_table"}),
    ],
)
def test_editing_a_template_never_retrains(tiny_run, template, expected):
    path = REPO / template
    original = path.read_bytes()
    # The templates' paths are inputs of the tiny run, so the edit is made in the repository itself (a copy would
    # change every input path); other workers' snakemake runs wait meanwhile, and it is undone before they go on.
    with editing_repository():
        path.write_bytes(original + b"{# an edit #}\n")  # Snakemake 9 reruns on changed content, not on mtime alone
        try:
            jobs = planned_jobs(tiny_run)
        finally:
            path.write_bytes(original)
    if not pdf_expected():
        expected = expected - {"report_pdf"}
    assert jobs - {"all"} == expected


def test_snakemake_report_zip(tiny_run, tmp_path):
    archive = tmp_path / "snakemake-report.zip"
    run_snakemake(tiny_run, "--configfile", str(TINY), "--report", str(archive))
    names = zipfile.ZipFile(archive).namelist()
    assert any(name.endswith("report.html") and "/data/raw/" in name for name in names)  # our report inside theirs
    assert sum(name.endswith("confusion.png") for name in names) == 4
    assert any(name.endswith("/report.html") and name.count("/") == 1 for name in names)  # Snakemake's own page
