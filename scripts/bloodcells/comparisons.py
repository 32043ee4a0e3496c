"""The paired comparisons behind the poster's conclusions: which configurations it compares, and their McNemar tests.

Each planned comparison is one function of (studies, accuracy, poster) yielding the `Comparison`s it makes;
`PLANNED_COMPARISONS` lists them in the order results/stats/significance.json reports them. `poster` is
paper/poster_values.yaml, the home of every poster number a claim quotes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .names import arch_size_label, model_label
from .stats import mcnemar, verdict
from .studies import lr_label, poster_lookup, run_value_matches

Config = tuple[dict, list[str]]  # a configuration's run values and its runs, one per seed
Studies = dict[str, list[Config]]
Accuracy = dict[str, float]  # test accuracy by run
ADAM_1E4 = {"optimizer": "adam", "learning_rate": 1e-4}
RMSPROP_1E4 = {"optimizer": "rmsprop", "learning_rate": 1e-4}


@dataclass(frozen=True)
class Comparison:
    """Two configurations (runs paired seed with seed) and the direction the poster claims."""

    comparison: str  # the comparison's id in significance.json
    claim: str
    a: str  # the configurations' labels
    b: str
    a_better_claimed: bool  # the poster says configuration A is more accurate
    a_runs: tuple[str, ...]
    b_runs: tuple[str, ...]


def config_matching(configs: Sequence[Config], **wanted) -> Config | None:
    """The first configuration whose run values match every wanted value, or None."""
    for values, runs in configs:
        if all(run_value_matches(values.get(key), want) for key, want in wanted.items()):
            return values, runs
    return None


def mean_accuracy(accuracy: Accuracy, runs: Sequence[str]) -> float:
    """The test accuracy of a configuration, averaged over its seeds."""
    return float(np.mean([accuracy[run] for run in runs]))


def poster_values(entries: Sequence[dict], metric: str, *configs: dict) -> list[str]:
    """The poster's values of one metric for each configuration, as printed ('0.9856')."""
    return [f"{poster_lookup(entries, values, metric)['value']:.4f}" for values in configs]


def best_vs_second(studies: Studies, accuracy: Accuracy, poster: dict) -> Iterator[Comparison]:
    """The best vs the second-best Table 3 model: the poster's pair where the grid has it, else ours."""
    table3 = studies.get("table3", [])
    ranked = sorted((e for e in poster["table3"]["values"] if e["metric"] == "accuracy"), key=lambda e: -e["value"])
    top = [config_matching(table3, arch=e["arch"], size=e["size"], batch_size=e["batch_size"]) for e in ranked[:2]]
    source = "poster's ranking"
    if None in top:
        top = sorted(table3, key=lambda config: -mean_accuracy(accuracy, config[1]))[:2]
        source = "reproduced ranking (the poster's two best models are not in this grid)"
    if len(top) != 2:
        return
    (a, a_runs), (b, b_runs) = top
    label_a, label_b = model_label(a), model_label(b)
    claim = f"Optimal configuration by accuracy: {label_a} beats the second-best, {label_b} ({source})"
    yield Comparison("table3_best_vs_second", claim, label_a, label_b, True, tuple(a_runs), tuple(b_runs))


def batch16_vs_32(studies: Studies, accuracy: Accuracy, poster: dict) -> Iterator[Comparison]:
    """Batch 16 vs 32 of each Table 3 model, claimed as the poster's Table 3 ranks them (else its conclusion)."""
    table3 = studies.get("table3", [])
    poster_table3 = poster["table3"]["values"]
    for values, runs in table3:
        if values["batch_size"] != 16:
            continue
        other = config_matching(table3, arch=values["arch"], size=values["size"], batch_size=32)
        if other is None:
            continue
        p16 = poster_lookup(poster_table3, values, "accuracy")
        p32 = poster_lookup(poster_table3, other[0], "accuracy")
        if p16 and p32:
            claim16 = p16["value"] > p32["value"]
            evidence = f"poster Table 3: {p16['value']:.4f} vs {p32['value']:.4f}"
        else:
            claim16, evidence = False, "poster conclusion: 'higher batch size improved F-1 scores'"
        model = arch_size_label(values)
        name = f"batch16_vs_32_{values['arch']}_{values['size']}"
        claim = f"{model}: batch {16 if claim16 else 32} is more accurate ({evidence})"
        yield Comparison(name, claim, f"{model}, batch 16", f"{model}, batch 32", claim16, tuple(runs), tuple(other[1]))


def attention_and_weights_vs_neither(studies: Studies, accuracy: Accuracy, poster: dict) -> Iterator[Comparison]:
    """No attention and an unweighted loss vs each attention layer with a class-weighted loss (any study's runs)."""
    attention = poster["text"]["attention"]
    for values, runs in studies.get("attention", []):
        if values["attention"] == "none" or not values["class_weights"]:
            continue
        neither = {**values, "attention": "none", "class_weights": False}
        matches = (config_matching(configs, **neither) for configs in studies.values())
        base = next((match for match in matches if match is not None), None)
        if base is None:
            continue
        layer = values["attention"]
        claim = (
            "Attention and class-weighted loss reduce test accuracy "
            f"(poster: {attention['accuracy_without']} -> {attention['accuracy_with']})"
        )
        a, b = "no attention, unweighted loss", f"attention ({layer.upper()}) + class-weighted loss"
        yield Comparison(f"attention_{layer}_cw_vs_none", claim, a, b, True, tuple(base[1]), tuple(runs))


def adam_vs_rmsprop(configs: Sequence[Config], study: str, adam_claimed: bool, evidence: str) -> Iterator[Comparison]:
    """Adam vs RMSprop at each learning rate of one study where it has both."""
    for values, runs in configs:
        if values["optimizer"] != "adam":
            continue
        other = config_matching(configs, **{**values, "optimizer": "rmsprop"})
        if other is None:
            continue
        lr = lr_label(values["learning_rate"])
        claim = f"{'Adam' if adam_claimed else 'RMSprop'} at {lr} is more accurate ({evidence})"
        name = f"{study}_adam_vs_rmsprop_lr{lr}"
        yield Comparison(name, claim, f"Adam {lr}", f"RMSprop {lr}", adam_claimed, tuple(runs), tuple(other[1]))


def adam_vs_rmsprop_without_attention(studies: Studies, accuracy: Accuracy, poster: dict) -> Iterator[Comparison]:
    """Adam vs RMSprop without attention or class weights (the optimizer study): the poster says Adam."""
    adam, rmsprop = poster_values(poster["methods_optimizer"]["values"], "train_accuracy", ADAM_1E4, RMSPROP_1E4)
    evidence = f"poster optimizer table: Adam best (training ACC {adam} vs {rmsprop})"
    return adam_vs_rmsprop(studies.get("optimizer", []), "optimizer", True, evidence)


def adam_vs_rmsprop_with_attention(studies: Studies, accuracy: Accuracy, poster: dict) -> Iterator[Comparison]:
    """Adam vs RMSprop with attention and class weights (Table 2): the poster says RMSprop."""
    adam, rmsprop = poster_values(poster["table2"]["values"], "accuracy", ADAM_1E4, RMSPROP_1E4)
    evidence = f"poster Table 2: RMSprop {rmsprop} vs Adam {adam} at 1e-4"
    return adam_vs_rmsprop(studies.get("table2", []), "table2", False, evidence)


# The comparisons the poster draws its conclusions from, in the order they are reported.
PLANNED_COMPARISONS: tuple[Callable[[Studies, Accuracy, dict], Iterable[Comparison]], ...] = (
    best_vs_second,
    batch16_vs_32,
    attention_and_weights_vs_neither,
    adam_vs_rmsprop_without_attention,
    adam_vs_rmsprop_with_attention,
)


def planned_comparisons(studies: Studies, accuracy: Accuracy, poster: dict) -> list[Comparison]:
    """Every comparison of PLANNED_COMPARISONS that the studies of this build can make."""
    return [comparison for plan in PLANNED_COMPARISONS for comparison in plan(studies, accuracy, poster)]


def prediction_outcomes(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A run's test labels (flat) and whether each image's argmax prediction is right, for the McNemar tests."""
    labels = np.asarray(labels).reshape(-1)
    return labels, np.argmax(probabilities, axis=1) == labels


def run_comparisons(
    planned: Sequence[Comparison],
    correct: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    accuracy: Accuracy,
    alpha: float,
) -> list[dict]:
    """McNemar tests (seed paired with seed) of each planned comparison and the verdict on the poster's claim."""
    results = []
    for plan in planned:
        tests = []
        if len(plan.a_runs) != len(plan.b_runs):
            raise ValueError(
                f"comparison {plan.comparison}: {len(plan.a_runs)} run(s) of {plan.a} "
                f"({', '.join(plan.a_runs)}) but {len(plan.b_runs)} of {plan.b} "
                f"({', '.join(plan.b_runs)}); McNemar pairs seed with seed, so both sides need the same seeds"
            )
        for ra, rb in zip(plan.a_runs, plan.b_runs, strict=True):
            if not np.array_equal(labels[ra], labels[rb]):
                raise ValueError(f"{ra} and {rb} were not evaluated on the same test images")
            tests.append(
                mcnemar(correct[ra], correct[rb])
                | {"a_run": ra, "b_run": rb, "a_accuracy": accuracy[ra], "b_accuracy": accuracy[rb]}
            )
        results.append(
            {
                "comparison": plan.comparison,
                "claim": plan.claim,
                "a": plan.a,
                "b": plan.b,
                "a_better_claimed": plan.a_better_claimed,
                "alpha": alpha,
                "tests": tests,
                "verdict": verdict(tests, plan.a_better_claimed, alpha),
            }
        )
    return results


def significance_frame(results: Sequence[dict]) -> pd.DataFrame:
    """One row per paired test (results/stats/significance.csv); McNemar's b and c are the discordant counts, the
    models' labels go under model_a / model_b."""
    return pd.DataFrame(
        [
            {"comparison": r["comparison"], "claim": r["claim"], "model_a": r["a"], "model_b": r["b"]}
            | {key: t[key] for key in ("a_run", "b_run", "a_accuracy", "b_accuracy")}
            | {"only_a_correct": t["b"], "only_b_correct": t["c"]}
            | {key: t[key] for key in ("p_exact", "chi2", "p_chi2")}
            | {"verdict": r["verdict"]}
            for r in results
            for t in r["tests"]
        ]
    )


def bootstrap_frame(runs: Sequence[str], boots: Sequence[dict]) -> pd.DataFrame:
    """One row per run: the bootstrap 95 % intervals of its test ACC and AUC (results/stats/bootstrap.csv)."""
    return pd.DataFrame(
        [
            {"run": run}
            | {f"{metric}_ci95_{end}": boot[metric][end] for metric in ("accuracy", "auc") for end in ("low", "high")}
            | {"n_boot": boot["n_boot"]}
            for run, boot in zip(runs, boots, strict=True)
        ]
    )
