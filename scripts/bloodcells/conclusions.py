"""The poster's conclusions checked one by one against the reproduced numbers (paper/conclusions.yaml).

Each check returns a verdict, 'supported', 'not supported' or 'not testable with the runs made', and the evidence
behind it in words. Checks that name a significance comparison use the McNemar tests of results/stats; the others
are descriptive (means over the grid's runs) and say so; their thresholds come from paper/conclusions.yaml, where each
has its reason, and every verdict text states the rule it applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .names import arch_label, model_label

SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable with the runs made"
DESCRIPTIVE = " (descriptive: no significance test)"


@dataclass
class Evidence:
    """What the checks read: the Table 3 grid's runs, their metrics and loss behaviour, the study tables, the
    significance tests and the Grad-CAM focus scores."""

    grid: dict[str, dict]
    metrics: dict[str, dict]
    behaviour: dict[str, dict]
    comparisons: list[dict] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    focus: dict[str, pd.DataFrame] = field(default_factory=dict)


def _runs(evidence: Evidence, **wanted) -> list[str]:
    """Grid runs whose values match every wanted key."""
    return [run for run, values in evidence.grid.items() if all(values[k] == v for k, v in wanted.items())]


def _configurations(evidence: Evidence) -> dict[tuple, list[str]]:
    """Grid runs grouped by (arch, size, batch_size): the seeds of one configuration together."""
    groups: dict[tuple, list[str]] = {}
    for run, values in evidence.grid.items():
        groups.setdefault((values["arch"], values["size"], values["batch_size"]), []).append(run)
    return groups


def _configuration_label(key: tuple) -> str:
    """'ResNet-101 (224 px), batch 16' of an (arch, size, batch_size) key of _configurations."""
    return model_label(dict(zip(("arch", "size", "batch_size"), key, strict=True)))


def _mean(values) -> float:
    return float(np.mean(list(values)))


def _class_metric(evidence: Evidence, runs: list[str], name: str, metric: str) -> float:
    """Mean of one class's metric over runs."""
    return _mean(evidence.metrics[run]["per_class"][name][metric] for run in runs)


def size_accuracy_above(check: dict, evidence: Evidence) -> tuple[str, str]:
    """Every configuration at the size reaches the accuracy threshold."""
    configs = {key: runs for key, runs in _configurations(evidence).items() if key[1] == check["size"]}
    if not configs:
        return NOT_TESTABLE, f"no {check['size']} px model in this grid (sizes: {_sizes(evidence)})"
    accuracy = {key: _mean(evidence.metrics[r]["accuracy"] for r in runs) for key, runs in configs.items()}
    text = ", ".join(f"{_configuration_label(key)} {acc:.4f}" for key, acc in accuracy.items())
    ok = all(acc > check["threshold"] for acc in accuracy.values())
    return (SUPPORTED if ok else NOT_SUPPORTED), f"test accuracy {text}; threshold {check['threshold']}"


def _sizes(evidence: Evidence) -> str:
    return ", ".join(f"{s} px" for s in sorted({v["size"] for v in evidence.grid.values()}))


def _two_groups(evidence: Evidence, key: str, a, b) -> tuple[list[str], list[str]] | None:
    """Runs of the grid with value a and with value b of one key; None when either group is empty."""
    runs_a, runs_b = _runs(evidence, **{key: a}), _runs(evidence, **{key: b})
    return (runs_a, runs_b) if runs_a and runs_b else None


def _curve_groups(evidence: Evidence, key: str, a, b) -> tuple[tuple[list[str], list[str]] | None, str]:
    """The two groups of runs whose loss curves a check compares, or None and why they cannot be compared."""
    groups = _two_groups(evidence, key, a, b)
    if groups is None:
        have = _sizes(evidence) if key == "size" else ", ".join(sorted({v["arch"] for v in evidence.grid.values()}))
        wanted = f"{a} px and {b} px" if key == "size" else f"{a} and {b}"
        return None, f"needs {wanted} models; this grid has {have}"
    if any(evidence.behaviour[r]["epochs"] < 2 for runs in groups for r in runs):
        return None, "some of these runs trained a single epoch, so their loss curves have no shape to compare"
    return groups, ""


def _size_behaviour(check: dict, evidence: Evidence, per_run: Callable[[dict], float], what: str) -> tuple[str, str]:
    """Supported when the mean of a loss-curve statistic at check['size'] exceeds that at other_size by at least
    check['min_difference']."""
    groups, why = _curve_groups(evidence, "size", check["size"], check["other_size"])
    if groups is None:
        return NOT_TESTABLE, why
    means = [_mean(per_run(evidence.behaviour[r]) for r in runs) for runs in groups]
    difference = means[0] - means[1]
    text = (
        f"{what}: {check['size']} px {means[0]:.2f}, {check['other_size']} px {means[1]:.2f}, difference "
        f"{difference:+.2f}; supported from {check['min_difference']}"
    )
    return (SUPPORTED if difference >= check["min_difference"] else NOT_SUPPORTED), text + DESCRIPTIVE


def more_spikes(check: dict, evidence: Evidence) -> tuple[str, str]:
    """Runs at one size have more validation-loss spikes per run than runs at the other."""
    return _size_behaviour(
        check, evidence, lambda b: b["spikes"], "validation-loss spikes (rise > 20 % over the previous epoch) per run"
    )


def later_best_epoch(check: dict, evidence: Evidence) -> tuple[str, str]:
    """Runs at one size reach their lowest validation loss later in training (as a share of the epochs run)."""
    return _size_behaviour(
        check,
        evidence,
        lambda b: b["best_epoch"] / b["epochs"],
        "epoch of the lowest validation loss as a share of the epochs run",
    )


def steadier_arch(check: dict, evidence: Evidence) -> tuple[str, str]:
    """One architecture's validation loss changes from epoch to epoch at most check['max_ratio'] times the other's."""
    groups, why = _curve_groups(evidence, "arch", check["arch"], check["other_arch"])
    if groups is None:
        return NOT_TESTABLE, why
    change = [_mean(evidence.behaviour[r]["mean_relative_change"] for r in runs) for runs in groups]
    names = [arch_label(check[k]) for k in ("arch", "other_arch")]
    ratio = change[0] / change[1] if change[1] > 0 else float("inf")
    text = (
        f"mean absolute relative change of the validation loss per epoch: {names[0]} {change[0]:.3f}, "
        f"{names[1]} {change[1]:.3f}, ratio {ratio:.2f}; supported up to {check['max_ratio']}"
    )
    return (SUPPORTED if ratio <= check["max_ratio"] else NOT_SUPPORTED), text + DESCRIPTIVE


def classes_near_perfect(check: dict, evidence: Evidence) -> tuple[str, str]:
    """Every grid run reaches the threshold in precision and recall of each named class."""
    runs = list(evidence.grid)
    missing = [c for c in check["classes"] if c not in evidence.metrics[runs[0]]["per_class"]]
    if missing:
        return NOT_TESTABLE, f"classes {missing} are not in the data"
    lowest = {
        c: min(min(evidence.metrics[r]["per_class"][c][m] for m in ("precision", "recall")) for r in runs)
        for c in check["classes"]
    }
    text = "; ".join(f"{c}: lowest precision or recall over {len(runs)} runs {v:.3f}" for c, v in lowest.items())
    ok = all(v >= check["threshold"] for v in lowest.values())
    return (SUPPORTED if ok else NOT_SUPPORTED), f"{text}; threshold {check['threshold']}" + DESCRIPTIVE


def lowest_classes(check: dict, evidence: Evidence) -> tuple[str, str]:
    """The named classes have the lowest mean of the metric over the grid's runs, each below check['below'] if given."""
    runs = list(evidence.grid)
    names = list(evidence.metrics[runs[0]]["per_class"])
    if any(c not in names for c in check["classes"]):
        return NOT_TESTABLE, f"classes {check['classes']} are not all in the data"
    means = sorted((_class_metric(evidence, runs, c, check["metric"]), c) for c in names)
    lowest = [c for _, c in means[: len(check["classes"])]]
    text = ", ".join(f"{c} {v:.3f}" for v, c in means[: len(check["classes"]) + 2])
    rule = f"supported when {' and '.join(check['classes'])} are the {len(check['classes'])} lowest"
    ok = set(lowest) == set(check["classes"])
    if "below" in check:
        rule += f", each below {check['below']}"
        ok = ok and all(_class_metric(evidence, runs, c, check["metric"]) < check["below"] for c in check["classes"])
    return (
        (SUPPORTED if ok else NOT_SUPPORTED),
        f"lowest mean {check['metric']} over {len(runs)} runs: {text}; {rule}" + DESCRIPTIVE,
    )


def _comparisons(evidence: Evidence, prefix: str) -> list[dict]:
    return [c for c in evidence.comparisons if c["comparison"].startswith(prefix)]


def _tests_text(comparisons: list[dict]) -> str:
    """'A vs B: acc 0.98 vs 0.97, p = 0.03 (supported)' for each comparison."""
    parts = []
    for c in comparisons:
        tests = c["tests"]
        acc_a, acc_b = _mean(t["a_accuracy"] for t in tests), _mean(t["b_accuracy"] for t in tests)
        p = ", ".join(f"{t['p_exact']:.3g}" for t in tests)
        parts.append(f"{c['a']} vs {c['b']}: accuracy {acc_a:.4f} vs {acc_b:.4f}, McNemar p = {p} ({c['verdict']})")
    return "; ".join(parts)


def best_configuration(check: dict, evidence: Evidence) -> tuple[str, str]:
    """The named configuration has the highest mean test accuracy of the grid, significantly above the second."""
    configs = _configurations(evidence)
    named = (check["arch"], check["size"], check["batch_size"])
    if named not in configs:
        return (
            NOT_TESTABLE,
            f"{_configuration_label(named)} is not in this grid",
        )
    accuracy = {key: _mean(evidence.metrics[r]["accuracy"] for r in runs) for key, runs in configs.items()}
    best = max(accuracy, key=accuracy.get)
    text = (
        f"most accurate: {_configuration_label(best)} ({accuracy[best]:.4f}); "
        f"{_configuration_label(named)} {accuracy[named]:.4f}"
    )
    if best != named:
        return NOT_SUPPORTED, text
    tests = _comparisons(evidence, check["comparison"])
    if tests:
        text += "; " + _tests_text(tests)
    significant = bool(tests) and all(c["verdict"] == "supported" for c in tests)
    return (SUPPORTED if significant else NOT_SUPPORTED), text + ("" if significant else "; not significantly ahead")


def batch_improves_f1(check: dict, evidence: Evidence) -> tuple[str, str]:
    """Batch 32 has the higher F1 than batch 16 of the same model and size on the named classes in more than
    check['min_share_improved'] of the cases, with a mean gain of at least check['min_mean_gain']."""
    configs = _configurations(evidence)
    pairs = [(key, (key[0], key[1], 32)) for key in configs if key[2] == 16 and (key[0], key[1], 32) in configs]
    if not pairs:
        return NOT_TESTABLE, "needs batch sizes 16 and 32 of the same model"
    differences = [
        _class_metric(evidence, configs[big], c, "f1") - _class_metric(evidence, configs[small], c, "f1")
        for small, big in pairs
        for c in check["classes"]
    ]
    improved, gain = sum(d > 0 for d in differences), float(np.mean(differences))
    text = (
        f"F1 of {', '.join(check['classes'])} with batch 32 minus batch 16, over {len(pairs)} models: "
        f"higher in {improved} of {len(differences)} cases, mean {gain:+.3f}; supported when higher in more than "
        f"{check['min_share_improved']:.0%} of cases with a mean gain of at least {check['min_mean_gain']}"
    )
    ok = improved > check["min_share_improved"] * len(differences) and gain >= check["min_mean_gain"]
    return (SUPPORTED if ok else NOT_SUPPORTED), text + DESCRIPTIVE


def best_column(check: dict, evidence: Evidence) -> tuple[str, str]:
    """In the named rows of a study table, the named column holds the highest mean."""
    frame = evidence.tables.get(check["table"])
    if frame is None or check["column"] not in set(frame["column"]):
        return NOT_TESTABLE, f"the {check['table']} study with '{check['column']}' was not run"
    verdicts, parts = [], []
    for row in check["rows"]:
        cells = frame[frame["row"] == row].set_index("column")["mean"]
        verdicts.append(cells.idxmax() == check["column"])
        parts.append(f"{row}: " + ", ".join(f"{column} {value:.4f}" for column, value in cells.items()))
    return (SUPPORTED if all(verdicts) else NOT_SUPPORTED), "; ".join(parts) + DESCRIPTIVE


def best_cell(check: dict, evidence: Evidence) -> tuple[str, str]:
    """The named cell of a table is its highest, and no paired test says otherwise."""
    frame = evidence.tables.get(check["table"])
    if frame is None:
        return NOT_TESTABLE, f"the {check['table']} study was not run"
    target = frame[(frame["row"] == check["row"]) & (frame["column"] == check["column"])]
    if target.empty:
        return NOT_TESTABLE, f"{check['row']} at {check['column']} is not in the {check['table']} study"
    top = frame.loc[frame["mean"].idxmax()]
    text = (
        f"highest in {check['table']}: {top['row']} {top['column']} ({top['mean']:.4f}); "
        f"{check['row']} {check['column']} {target['mean'].iloc[0]:.4f}"
    )
    tests = _comparisons(evidence, check["comparisons"])
    if tests:
        text += "; " + _tests_text(tests)
    contradicted = any(c["verdict"] == "contradicted" for c in tests)
    ok = top["row"] == check["row"] and top["column"] == check["column"] and not contradicted
    return (SUPPORTED if ok else NOT_SUPPORTED), text


def significance(check: dict, evidence: Evidence) -> tuple[str, str]:
    """Every paired test of the named comparisons is significant in the poster's direction."""
    tests = _comparisons(evidence, check["comparisons"])
    if not tests:
        return NOT_TESTABLE, "no such comparison among the runs made"
    ok = all(c["verdict"] == "supported" for c in tests)
    return (SUPPORTED if ok else NOT_SUPPORTED), _tests_text(tests)


def _focus_run(check: dict, run: str, frame: pd.DataFrame) -> tuple[bool | None, str]:
    """One run's focus.csv judged: pooled ratio and each class with enough images; None when no class has enough."""
    pooled = frame[frame["class"] == "all"].iloc[0]
    classes = frame[frame["class"] != "all"]
    judged = classes[classes["n_images"] >= check["min_class_images"]]
    failing = judged[~(judged["focus_ratio"] >= check["class_ratio"])]  # a NaN ratio fails too
    text = (
        f"{run}: {pooled['focus_mean']:.1%} of the heat on {pooled['region_area_share']:.1%} of the image "
        f"({pooled['region']}), pooled ratio {pooled['focus_ratio']:.2f}"
    )
    if judged.empty:
        return None, text + f"; no class has {check['min_class_images']} test images, so no class could be judged"
    if failing.empty:
        lowest = judged.loc[judged["focus_ratio"].idxmin()]
        text += (
            f"; all {len(judged)} classes judged reach {check['class_ratio']} "
            f"(lowest {lowest['class']} {lowest['focus_ratio']:.2f})"
        )
    else:
        text += f"; {len(failing)} of {len(judged)} classes judged below {check['class_ratio']}: " + ", ".join(
            f"{r['class']} {r['focus_ratio']:.2f} ({r['focus_mean']:.1%} of the heat)"
            for _, r in failing.sort_values("focus_ratio").iterrows()
        )
    small = classes[classes["n_images"] < check["min_class_images"]]
    if not small.empty:
        text += f"; not judged (< {check['min_class_images']} images): {', '.join(small['class'])}"
    return bool(pooled["focus_ratio"] >= check["pooled_ratio"] and failing.empty), text


def gradcam_focus(check: dict, evidence: Evidence) -> tuple[str, str]:
    """Supported when in every Grad-CAM run the pooled focus ratio reaches check['pooled_ratio'] and every class with
    at least check['min_class_images'] test images reaches check['class_ratio']."""
    if not evidence.focus:
        return NOT_TESTABLE, "no Grad-CAM panel was made"
    judged = [_focus_run(check, run, frame) for run, frame in evidence.focus.items()]
    rule = (
        f"Supported when the pooled focus ratio (heat share in the region / its area share; 1 = no preference) "
        f"is at least {check['pooled_ratio']} and every class with at least {check['min_class_images']} test "
        f"images has at least {check['class_ratio']}"
    )
    text = (
        "; ".join(part for _, part in judged)
        + f". {rule}. This tests where the heat lies, not which morphology it marks"
    )
    if any(ok is None for ok, _ in judged):
        return NOT_TESTABLE, text + DESCRIPTIVE
    return (SUPPORTED if all(ok for ok, _ in judged) else NOT_SUPPORTED), text + DESCRIPTIVE


def external_accuracy(check: dict, evidence: Evidence) -> tuple[str, str]:
    """The external dataset's test accuracy reaches the threshold."""
    frame = evidence.tables.get(check["table"])
    if frame is None:
        return NOT_TESTABLE, "the external-dataset study was not run"
    # the accuracy line of the classification report, as sklearn prints it; its poster value is the table's own
    line = frame[(frame["row"] == "accuracy") & (frame["column"] == "f1-score")].iloc[0]
    accuracy, poster = line["mean"], line.get("poster", float("nan"))
    quoted = "" if pd.isna(poster) else f" (poster {poster:g})"
    text = f"external test accuracy {accuracy:.4f}{quoted}; threshold {check['threshold']}"
    return (SUPPORTED if accuracy >= check["threshold"] else NOT_SUPPORTED), text + DESCRIPTIVE


CHECKS: dict[str, Callable[[dict, Evidence], tuple[str, str]]] = {
    f.__name__: f
    for f in (
        size_accuracy_above,
        more_spikes,
        later_best_epoch,
        steadier_arch,
        classes_near_perfect,
        lowest_classes,
        best_configuration,
        batch_improves_f1,
        best_column,
        best_cell,
        significance,
        gradcam_focus,
        external_accuracy,
    )
}


def assess(conclusions: list[dict], evidence: Evidence) -> list[dict]:
    """Each conclusion with its verdict and evidence; an unknown check kind is an error naming it."""
    out = []
    for index, conclusion in enumerate(conclusions):
        kind = conclusion["check"]["kind"]
        if kind not in CHECKS:
            raise ValueError(
                f"conclusion {index + 1} ('{conclusion['poster']}'): unknown check kind '{kind}'; "
                f"expected one of {sorted(CHECKS)}"
            )
        verdict, text = CHECKS[kind](conclusion["check"], evidence)
        out.append({"poster": conclusion["poster"], "verdict": verdict, "evidence": text})
    return out
