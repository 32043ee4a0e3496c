"""Tables 1 and 3: aggregation over seeds, the poster's values beside ours, rendering."""

import pytest
from conftest import POSTER, REPO

from bloodcells.tables import compare, latex_escape, poster_frame, render, run_records, summarise, table_cells


def metrics(acc: float, auc: float, f1: float) -> dict:
    """A minimal metrics.json."""
    return {"accuracy": acc, "auc": auc, "per_class": {"monocyte": {"f1": f1}, "platelet": {"f1": 1.0}}}


def grid_runs():
    """Two seeds of ResNet-101 224 px batch 16 and one seed of an off-poster size."""
    runs = [
        {"arch": "resnet101", "size": 224, "batch_size": 16, "seed": 0, "run": "a"},
        {"arch": "resnet101", "size": 224, "batch_size": 16, "seed": 1, "run": "b"},
        {"arch": "resnet50", "size": 32, "batch_size": 32, "seed": 0, "run": "c"},
    ]
    return runs, [metrics(0.98, 0.999, 0.96), metrics(0.99, 0.997, 0.98), metrics(0.8, 0.9, 0.7)]


def test_poster_values_cover_both_tables():
    assert len(POSTER["table3"]["values"]) == 24  # 12 models x (accuracy, AUC)
    assert len(POSTER["table1"]["values"]) == 96  # 12 models x 8 classes
    best = [
        v
        for v in POSTER["table3"]["values"]
        if (v["arch"], v["size"], v["batch_size"], v["metric"]) == ("resnet101", 224, 16, "accuracy")
    ]
    assert best[0]["value"] == 0.988 and "ResNet101" in best[0]["column"]


def test_summary_gives_mean_and_sd_over_seeds():
    summary = summarise(run_records(*grid_runs()))
    row = summary[(summary["size"] == 224) & (summary["metric"] == "accuracy")].iloc[0]
    assert row["mean"] == pytest.approx(0.985) and row["sd"] == pytest.approx(0.00707, abs=1e-5) and row["n_seeds"] == 2


def test_compare_pairs_each_value_with_the_poster():
    compared = compare(summarise(run_records(*grid_runs())), poster_frame(POSTER, "table3"), ["accuracy", "auc"])
    ours = compared[(compared["size"] == 224) & (compared["metric"] == "accuracy")].iloc[0]
    assert ours["poster"] == 0.988 and ours["difference"] == pytest.approx(0.985 - 0.988)
    off_poster = compared[compared["size"] == 32]
    assert off_poster["poster"].isna().all()
    f1 = compare(summarise(run_records(*grid_runs())), poster_frame(POSTER, "table1"), ["f1"])
    monocyte = f1[(f1["size"] == 224) & (f1["class"] == "monocyte")].iloc[0]
    assert monocyte["poster"] == 0.99 and monocyte["poster_row"] == "Monocyte"


def test_rendered_tables_show_ours_beside_the_poster():
    compared = compare(summarise(run_records(*grid_runs())), poster_frame(POSTER, "table3"), ["accuracy", "auc"])
    cells = table_cells(compared, "metric", ["accuracy", "auc"])
    context = {"title": "T3 & co", "caption": "c", "notes": ["50% of it"], "synthetic": True}
    html = render(REPO / "paper", "table.html.j2", table=cells | context)
    assert "0.9850 ± 0.0071" in html and "poster 0.9880 (Δ -0.0030)" in html and "T3 &amp; co" in html
    assert "synthetic demo cells" in html
    tex = render(REPO / "paper", "table.tex.j2", table=cells | context)
    assert r"0.9850 $\pm$ 0.0071" in tex and r"T3 \& co" in tex and r"50\% of it" in tex


def test_latex_escape():
    assert latex_escape("a_b & 5% ~ #1") == r"a\_b \& 5\% $\sim$ \#1"  # the poster writes ~100 % for "about"


def test_poster_value_outside_our_interval_is_marked():
    runs = [
        {"arch": "resnet50", "size": 64, "batch_size": 32, "seed": 0, "run": "one"},
        {"arch": "resnet101", "size": 224, "batch_size": 16, "seed": 0, "run": "a"},
        {"arch": "resnet101", "size": 224, "batch_size": 16, "seed": 1, "run": "b"},
    ]
    results = [metrics(0.90, 0.99, 0.9), metrics(0.98, 0.999, 0.96), metrics(0.99, 0.997, 0.98)]
    boots = [{"accuracy": {"low": 0.88, "high": 0.92}, "auc": {"low": 0.985, "high": 0.998}}] + [
        {"accuracy": {"low": 0.0, "high": 1.0}, "auc": {"low": 0.0, "high": 1.0}}
    ] * 2
    compared = compare(
        summarise(run_records(runs, results, boots)), poster_frame(POSTER, "table3"), ["accuracy", "auc"]
    )
    one = compared[(compared["size"] == 64)].set_index("metric")
    # one seed: the bootstrap interval; the poster's 0.9775 is above [0.88, 0.92], its AUC 0.9966 inside
    assert (one.loc["accuracy", "ci95_low"], one.loc["accuracy", "ci95_high"]) == (0.88, 0.92)
    assert one.loc["accuracy", "poster_outside_ci"] and not one.loc["auc", "poster_outside_ci"]
    # two seeds: Student's t interval of the mean (t_0.975,1 = 12.706), not either seed's bootstrap interval
    two = compared[(compared["size"] == 224) & (compared["metric"] == "accuracy")].iloc[0]
    assert two["ci95_low"] == pytest.approx(0.985 - 12.706 * 0.00707107 / 2**0.5, abs=1e-4)
    assert not two["poster_outside_ci"]
    cells = table_cells(compared, "metric", ["accuracy", "auc"])
    html = render(
        REPO / "paper", "table.html.j2", table=cells | {"title": "T", "caption": "", "notes": [], "synthetic": False}
    )
    assert (
        cells["any_outside"] and html.count('class="outside"') == 1 and "0.9000 ‡" in html and "[0.880, 0.920]" in html
    )
    assert "poster's value lies outside our 95 % interval" in html and "synthetic demo cells" not in html


def test_latex_escape_writes_symbols_as_commands():
    assert latex_escape("Δ ‡ × ≥ 0.5 ± 1 → x") == r"$\Delta$ \ddag{} $\times$ $\geq$ 0.5 $\pm$ 1 $\rightarrow$ x"


@pytest.mark.parametrize("template", ["table.html.j2", "table.tex.j2"])
def test_table_without_poster_values_says_it_is_not_in_the_poster(template):
    compared = compare(summarise(run_records(*grid_runs())), poster_frame(POSTER, "table3"), ["accuracy", "auc"])
    cells = table_cells(compared, "metric", ["accuracy", "auc"])
    context = {"title": "T", "notes": [], "synthetic": False}
    assert "transfer" not in POSTER  # the poster has no transfer study, so its table gets an empty caption
    bare = render(REPO / "paper", template, table=cells | context | {"caption": ""})
    assert "Poster:" not in bare and "Not in the poster: the poster has no such table" in bare
    captioned = render(REPO / "paper", template, table=cells | context | {"caption": "Table 3: test set"})
    assert "Poster: Table 3: test set" in captioned and "Not in the poster" not in captioned
