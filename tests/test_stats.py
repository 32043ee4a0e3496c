"""Bootstrap intervals and McNemar tests against hand-computed values and simulated coverage."""

import numpy as np
import pytest
from scipy.stats import norm

from bloodcells.metrics import accuracy, mean_ovr_auc
from bloodcells.stats import bootstrap_ci, mcnemar, mcnemar_counts, multinomial_counts, resampled_metrics, verdict


# Hand computations. Exact: p = min(1, 2 * sum_{k<=min(b,c)} C(b+c, k) / 2^(b+c)).
# Chi-square with continuity correction: (|b - c| - 1)^2 / (b + c), 1 df.
@pytest.mark.parametrize(
    "b, c, p_exact, chi2, p_chi2",
    [
        (1, 5, 2 * (1 + 6) / 64, 1.5, 0.2206714),  # 14/64 = 0.21875
        (0, 10, 2 / 1024, 8.1, 0.0044265),  # 0.001953125
        (2, 8, 2 * (1 + 10 + 45) / 1024, 2.5, 0.1138463),  # 112/1024 = 0.109375
        (7, 7, 1.0, 0.0, 1.0),  # equal counts: no evidence either way
        (0, 0, 1.0, 0.0, 1.0),  # no discordant pairs
    ],
)
def test_mcnemar_matches_hand_computed_values(b, c, p_exact, chi2, p_chi2):
    result = mcnemar_counts(b, c)
    assert result["p_exact"] == pytest.approx(p_exact, rel=1e-9)
    assert result["chi2"] == pytest.approx(chi2)
    assert result["p_chi2"] == pytest.approx(p_chi2, rel=1e-5)


def test_mcnemar_counts_discordant_pairs_from_correctness():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0], bool)
    result = mcnemar(a, b)
    assert (result["b"], result["c"]) == (3, 1)
    with pytest.raises(ValueError, match="same images"):
        mcnemar(a, b[:5])


def test_mcnemar_takes_correctness_as_numbers_too():
    # 0/1 as floats (a mean of one-hot matches) or lists: read as booleans, not combined bitwise as numbers
    a, b = [1, 1, 1, 0, 0, 1, 0, 1], [1, 0, 0, 0, 1, 1, 0, 0]
    for first, second in ((np.array(a, float), b), (a, np.array(b, float)), (a, b)):
        result = mcnemar(first, second)
        assert (result["b"], result["c"]) == (3, 1)


def test_verdict_needs_every_seed_significant_in_the_claimed_direction():
    strong_a = {"b": 20, "c": 0, "p_exact": mcnemar_counts(20, 0)["p_exact"]}
    weak = {"b": 5, "c": 4, "p_exact": 1.0}
    assert verdict([strong_a], True, 0.05) == "supported"
    assert verdict([strong_a], False, 0.05) == "contradicted"
    assert verdict([strong_a, weak], True, 0.05) == "not significant"


def test_resampled_metrics_equal_metrics_of_the_resampled_images():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    probabilities = np.round(rng.dirichlet(np.ones(4), 200) + 0.3 * np.eye(4)[labels], 2)  # with ties
    counts = multinomial_counts(200, 4, rng)
    acc, auc = resampled_metrics(labels, probabilities, counts)
    for row in range(4):
        index = np.repeat(np.arange(200), counts[row].astype(int))
        assert acc[row] == pytest.approx(accuracy(labels[index], probabilities[index]))
        assert auc[row] == pytest.approx(mean_ovr_auc(labels[index], probabilities[index]))


def test_bootstrap_coverage_is_close_to_95_percent():
    """On simulated test sets with known true ACC (0.85) and AUC (binormal, d = 1.5), the 95 % intervals cover
    the truth in about 95 % of 300 simulations (binomial sd of the coverage about 1.3 %)."""
    rng = np.random.default_rng(42)
    true_acc, d = 0.85, 1.5
    true_auc = norm.cdf(d / np.sqrt(2))
    covered_acc = covered_auc = 0
    n_sim = 300
    for sim in range(n_sim):
        n = 300
        labels = rng.integers(0, 2, n)
        # AUC: class-1 score ~ N(d, 1) for positives, N(0, 1) for negatives; both classes' OvR AUCs equal it.
        score = rng.normal(d * labels, 1.0)
        p1 = 1 / (1 + np.exp(-score))
        probabilities = np.stack([1 - p1, p1], axis=1)
        ci = bootstrap_ci(labels, probabilities, n_boot=400, seed=sim)
        covered_auc += ci["auc"]["low"] <= true_auc <= ci["auc"]["high"]
        # ACC: correctness drawn with the true accuracy (predictions built to match it)
        correct = rng.random(n) < true_acc
        predicted = np.where(correct, labels, 1 - labels)
        ci = bootstrap_ci(labels, np.eye(2)[predicted], n_boot=400, seed=sim)
        covered_acc += ci["accuracy"]["low"] <= true_acc <= ci["accuracy"]["high"]
    assert 0.91 <= covered_acc / n_sim <= 0.985
    assert 0.91 <= covered_auc / n_sim <= 0.985
