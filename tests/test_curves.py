"""Curve plots of history.csv: epochs on the x axis are whole numbers."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from bloodcells.curves import comparison_figure, history_figure, plot_curve_comparison, plot_history


def history(epochs: int) -> pd.DataFrame:
    """A history.csv of `epochs` epochs (numbered from 1, as training writes them)."""
    return pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "loss": [1.0 / e for e in range(1, epochs + 1)],
            "val_loss": [1.2 / e for e in range(1, epochs + 1)],
            "accuracy": [0.5 + 0.1 * e for e in range(epochs)],
            "val_accuracy": [0.45 + 0.1 * e for e in range(epochs)],
        }
    )


def epoch_tick_labels(fig: plt.Figure) -> list[list[str]]:
    """The drawn x tick labels of every panel, as matplotlib writes them."""
    fig.canvas.draw()
    labels = [
        [t.get_text().replace("\u2212", "-") for t in axis.get_xticklabels() if t.get_text()] for axis in fig.axes
    ]
    plt.close(fig)
    return labels


def assert_whole_epochs(labels: list[list[str]]) -> None:
    assert labels and all(panel for panel in labels)
    for panel in labels:
        assert all(label.lstrip("-").isdigit() for label in panel), panel  # '1', not '1.00' or '1.25'


@pytest.mark.parametrize("epochs", [2, 3, 5])
def test_training_curves_label_epochs_as_integers(epochs):
    labels = epoch_tick_labels(history_figure(history(epochs), "run"))
    assert_whole_epochs(labels)
    assert "1" in labels[0] and str(epochs) in labels[0]


@pytest.mark.parametrize("epochs", [2, 3])
def test_compared_curves_label_epochs_as_integers(epochs):
    runs = {
        f"r{size}{arch}": {"size": size, "arch": arch, "batch_size": 16}
        for size in (64, 224)
        for arch in ("resnet50", "resnet101")
    }
    fig = comparison_figure({run: history(epochs) for run in runs}, runs)
    assert len(fig.axes) == 2  # by image size and by architecture
    assert_whole_epochs(epoch_tick_labels(fig))


def test_plots_are_written(tmp_path):
    plot_history(history(3), "run", str(tmp_path / "curves.png"))
    plot_curve_comparison(
        {"a": history(3)}, {"a": {"size": 64, "arch": "resnet50", "batch_size": 16}}, str(tmp_path / "compared.png")
    )
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "compared.png").stat().st_size > 0
