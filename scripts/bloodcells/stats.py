"""Uncertainty and significance of test-set results: bootstrap confidence intervals and paired McNemar tests.

Bootstrap: the test images are resampled with replacement (`n_boot` times, seeded); the interval is the
percentile interval of the resampled ACC and mean one-vs-rest AUC. Resamples are drawn as multinomial counts, and
the AUC of a resample is the weighted Mann-Whitney statistic, so no score is re-sorted per resample.

McNemar: two models' predictions on the same test images; b = images only model A gets right, c = images only
model B gets right. The reported p-value is the exact two-sided binomial test (b ~ Bin(b + c, 1/2)),
p = min(1, 2 P(X <= min(b, c))), which is valid for any b + c; the chi-square statistic with Edwards' continuity
correction, (|b - c| - 1)^2 / (b + c) on 1 degree of freedom, is reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats


def multinomial_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of n items appears in each of n_boot resamples of size n (n_boot x n)."""
    draws = rng.integers(0, n, size=(n_boot, n))
    flat = (np.arange(n_boot)[:, None] * n + draws).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of `scores` for the binary `positive` under each row of `weights` (B x n); ties count one half."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # groups of tied scores
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)


def resampled_metrics(
    labels: np.ndarray, probabilities: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ACC and mean one-vs-rest AUC (classes absent from a resample skipped, as MedMNIST does) of each resample."""
    labels = np.asarray(labels).reshape(-1)
    correct = (np.argmax(probabilities, axis=1) == labels).astype(np.float64)
    acc = counts @ correct / counts.sum(axis=1)
    aucs = np.stack([weighted_auc(probabilities[:, k], labels == k, counts) for k in range(probabilities.shape[1])])
    return acc, np.nanmean(aucs, axis=0)


def bootstrap_ci(
    labels: np.ndarray, probabilities: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap intervals of test ACC and AUC: {'accuracy': {'low', 'high'}, 'auc': {...}}."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    result: dict[str, dict[str, float]] = {}
    accs, aucs = [], []
    for start in range(0, n_boot, 250):  # chunks bound memory on large test sets
        counts = multinomial_counts(len(labels), min(250, n_boot - start), rng)
        acc, auc = resampled_metrics(labels, probabilities, counts)
        accs.append(acc)
        aucs.append(auc)
    tail = (1 - level) / 2
    for name, values in (("accuracy", np.concatenate(accs)), ("auc", np.concatenate(aucs))):
        low, high = np.nanquantile(values, [tail, 1 - tail])
        result[name] = {"low": float(low), "high": float(high)}
    result["n_boot"] = n_boot
    result["level"] = level
    return result


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Paired McNemar test of two models' per-image correctness on the same images (see the module docstring)."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"paired tests need the same images: {correct_a.shape} vs {correct_b.shape}")
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    return mcnemar_counts(b, c)


def mcnemar_counts(b: int, c: int) -> dict[str, float]:
    """McNemar's exact binomial and continuity-corrected chi-square p-values from the discordant counts b and c."""
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "p_exact": 1.0, "chi2": 0.0, "p_chi2": 1.0}
    p_exact = min(1.0, 2.0 * float(scipy_stats.binom.cdf(min(b, c), n, 0.5)))
    chi2 = (abs(b - c) - 1) ** 2 / n if abs(b - c) >= 1 else 0.0
    return {"b": b, "c": c, "p_exact": p_exact, "chi2": float(chi2), "p_chi2": float(scipy_stats.chi2.sf(chi2, 1))}


def verdict(tests: Sequence[dict], a_better_claimed: bool, alpha: float) -> str:
    """What paired tests (one per seed) say about a claim that model A (or B) is more accurate.

    'supported': every seed significant (exact p < alpha) in the claimed direction; 'contradicted': some seed
    significant the other way; otherwise 'not significant'.
    """
    claimed = [(t["b"] > t["c"]) == a_better_claimed and t["b"] != t["c"] for t in tests]
    significant = [t["p_exact"] < alpha for t in tests]
    if any(s and not c for s, c in zip(significant, claimed, strict=True)):
        return "contradicted"
    if tests and all(s and c for s, c in zip(significant, claimed, strict=True)):
        return "supported"
    return "not significant"
