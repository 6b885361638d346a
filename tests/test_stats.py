"""archlab.stats against references: scipy's t-test and t distribution, baycomp's correlated
t-test, the 5x2cv formulas written out loop by loop, Holm by hand; zero variances; and a seeded
null simulation where the corrected test keeps its 5% and the naive one does not."""

from __future__ import annotations

import math
import time

import baycomp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from archlab.stats import (
    corrected_ttest,
    correlated_bayes,
    five_by_two,
    folds_ratio,
    holm,
)

TOL = 1e-9
# (k, repeats) of the random fixtures: 2x5 (5x2cv), 10x1, 5x3, 3x10, 10x10
SHAPES = [(2, 5), (10, 1), (5, 3), (3, 10), (10, 10), (2, 1)]


def fixtures(count: int = 40) -> list[tuple[int, int, np.ndarray, np.ndarray, float]]:
    """Seeded (k, repeats, scores of A, scores of B, rope): accuracies with a shared per-fold
    difficulty, small and large effects, ropes from 0 to 0.05."""
    rng = np.random.default_rng(17)
    out = []
    for i in range(count):
        k, repeats = SHAPES[i % len(SHAPES)]
        j = k * repeats
        base = rng.uniform(0.6, 0.9, j)
        a = base + rng.normal(0, 0.02, j)
        b = base + rng.normal(rng.choice([0.0, 0.005, 0.03, -0.02]), 0.02, j)
        rope = float(rng.choice([0.0, 0.001, 0.01, 0.05]))
        out.append((k, repeats, a, b, rope))
    return out


@pytest.mark.parametrize("case", range(40))
def test_corrected_ttest_matches_baycomps_variance_and_scipys_t(case: int) -> None:
    k, repeats, a, b, _ = fixtures()[case]
    mean, var, df = baycomp.CorrelatedTTest.compute_statistics(a, b, runs=repeats)
    test = corrected_ttest(b - a, folds_ratio(k))
    assert test.df == df == k * repeats - 1
    assert test.t == pytest.approx(mean / math.sqrt(var), abs=TOL, rel=TOL)
    assert test.p == pytest.approx(2 * scipy_stats.t.sf(abs(mean / math.sqrt(var)), df), abs=TOL)
    low, high = scipy_stats.t.interval(0.95, df, loc=mean, scale=math.sqrt(var))
    assert (test.ci_low, test.ci_high) == pytest.approx((low, high), abs=TOL)


@pytest.mark.parametrize("case", range(40))
def test_naive_ttest_is_scipys_paired_ttest(case: int) -> None:
    _, _, a, b, _ = fixtures()[case]
    ref = scipy_stats.ttest_rel(b, a)
    test = corrected_ttest(b - a, 0.0)
    assert (test.t, test.p) == pytest.approx((ref.statistic, ref.pvalue), abs=TOL, rel=TOL)
    interval = ref.confidence_interval(0.95)
    assert (test.ci_low, test.ci_high) == pytest.approx((interval.low, interval.high), abs=TOL)


@pytest.mark.parametrize("case", range(40))
def test_bayesian_correlated_ttest_equals_baycomp_two_on_single(case: int) -> None:
    k, repeats, a, b, rope = fixtures()[case]
    ref = baycomp.two_on_single(a, b, rope=rope, runs=repeats)
    post = correlated_bayes(b - a, folds_ratio(k), rope)
    if rope == 0:  # baycomp answers (left, right) without a rope
        ref = (ref[0], 0.0, ref[1])
    assert (post.p_below, post.p_rope, post.p_above) == pytest.approx(tuple(ref), abs=TOL)
    assert post.p_below + post.p_rope + post.p_above == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("diffs", "rope"),
    [
        ([0.0] * 10, 0.0),
        ([0.0] * 10, 0.01),
        ([0.03125] * 10, 0.01),  # binary fractions: a sample variance of exactly 0
        ([-0.03125] * 10, 0.01),
        ([0.00390625] * 10, 0.01),
        ([0.25] * 6, 0.0),
        ([-0.25] * 6, 0.0),
        ([0.015625] * 8, 0.015625),  # on the ROPE's edge: inside, as baycomp counts it
        ([0.02] * 10, 0.01),  # equal, but their mean is not 0.02 exactly: a variance of 1e-35
    ],
)
def test_zero_variance_as_baycomp_never_nan(diffs: list[float], rope: float) -> None:
    d = np.asarray(diffs)
    assert np.var(d, ddof=1) == 0 or diffs[0] == 0.02
    a = np.full(len(d), 0.5)
    ref = baycomp.two_on_single(a, a + d, rope=rope, runs=1)
    if rope == 0:
        ref = (ref[0], 0.0, ref[1])
    k = len(d)  # one repeat of k folds
    post = correlated_bayes(diffs, folds_ratio(k), rope)
    assert (post.p_below, post.p_rope, post.p_above) == pytest.approx(tuple(ref), abs=TOL)
    for ratio in (folds_ratio(k), 0.0):
        test = corrected_ttest(diffs, ratio)
        values = [test.t, test.p, test.ci_low, test.ci_high]
        assert not any(math.isnan(v) for v in values)
        mean = float(np.mean(d))
        if np.var(d, ddof=1) > 0:  # not quite 0: a huge t, a tiny interval, nothing NaN
            assert abs(test.t) > 1e10 and test.p < 1e-100
            assert test.ci_low == pytest.approx(mean) == test.ci_high
        elif mean == 0:
            assert test.ci_low == test.ci_high == mean
            assert (test.t, test.p) == (0.0, 1.0)
        else:
            assert test.ci_low == test.ci_high == mean
            assert test.t == math.copysign(math.inf, mean) and test.p == 0.0


def test_refuses_what_is_not_a_sample_of_differences() -> None:
    with pytest.raises(ValueError, match="at least 2 differences, not 1"):
        corrected_ttest([0.1], 0.5)
    with pytest.raises(ValueError, match="finite"):
        correlated_bayes([0.1, math.nan], 0.5)
    with pytest.raises(ValueError, match="ROPE half-width"):
        correlated_bayes([0.1, 0.2], 0.5, rope=-0.01)
    with pytest.raises(ValueError, match="n2/n1"):
        corrected_ttest([0.1, 0.2], -1.0)
    with pytest.raises(ValueError, match="k >= 2"):
        folds_ratio(1)
    with pytest.raises(ValueError, match="10 differences"):
        five_by_two([0.1] * 8)


def five_by_two_reference(d: np.ndarray) -> tuple[float, float, float, float]:
    """Dietterich (1998) eq. for t and Alpaydin (1999) for F, written out as in the papers:
    p_i^(j) for replication i = 1..5, fold j = 1, 2."""
    p = {(i, j): float(d[2 * (i - 1) + (j - 1)]) for i in range(1, 6) for j in (1, 2)}
    s2 = []
    for i in range(1, 6):
        bar = (p[i, 1] + p[i, 2]) / 2
        s2.append((p[i, 1] - bar) ** 2 + (p[i, 2] - bar) ** 2)
    t = p[1, 1] / math.sqrt(sum(s2) / 5)
    f = sum(v * v for v in p.values()) / (2 * sum(s2))
    return t, 2 * scipy_stats.t.sf(abs(t), 5), f, scipy_stats.f.sf(f, 10, 5)


@pytest.mark.parametrize("case", [c for c in range(40) if SHAPES[c % len(SHAPES)] == (2, 5)])
def test_five_by_two_matches_the_papers_formulas(case: int) -> None:
    _, _, a, b, _ = fixtures()[case]
    got = five_by_two(b - a)
    assert (got.t, got.p, got.f, got.p_f) == pytest.approx(
        five_by_two_reference(b - a), abs=TOL, rel=TOL
    )


def test_five_by_two_known_value_and_zero_spread() -> None:
    # every repeat's two folds differ by +-0.01 around 0.02: s_i^2 = 2e-4, sum 1e-3
    d = np.array([0.03, 0.01] * 5)
    got = five_by_two(d)
    assert got.t == pytest.approx(0.03 / math.sqrt(1e-3 / 5))
    assert got.f == pytest.approx((5 * (0.03**2 + 0.01**2)) / (2 * 1e-3))
    zero = five_by_two([0.0] * 10)
    assert (zero.t, zero.p, zero.f, zero.p_f) == (0.0, 1.0, 0.0, 1.0)
    same = five_by_two([0.25, 0.25] * 5)
    assert (same.t, same.p, same.f, same.p_f) == (math.inf, 0.0, math.inf, 0.0)


def test_holm_by_hand_and_its_properties() -> None:
    # sorted 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1, raised to 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []
    assert holm([0.2]) == [0.2]
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.2, rng.integers(1, 12)).tolist()
        adjusted = holm(p)
        assert all(q >= v for q, v in zip(adjusted, p, strict=True))  # never smaller
        assert all(q <= min(1.0, len(p) * v) + 1e-15 for q, v in zip(adjusted, p, strict=True))
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(np.asarray(adjusted)[order]) >= 0)  # order kept
    with pytest.raises(ValueError, match=r"lies in \[0, 1\]"):
        holm([0.5, 1.5])


# --------------------------------------------------------------------------- the null simulation


def fold_masks(n: int, k: int, repeats: int, rng: np.random.Generator) -> np.ndarray:
    """(J, n) validation masks of repeated k-fold CV, repeat r fold f at row r * k + f."""
    masks = np.zeros((repeats * k, n), dtype=bool)
    for r in range(repeats):
        order = rng.permutation(n)
        for f in range(k):
            masks[r * k + f, order[f::k]] = True
    return masks


def centroid_accuracy(x: np.ndarray, y: np.ndarray, val: np.ndarray) -> np.ndarray:
    """(J,) validation accuracy of a nearest-centroid classifier fitted on each fold's training
    rows of ``x`` (n, d) with labels ``y`` (n,) in {0, 1}; ``val`` (J, n)."""
    train = ~val
    centroids = []
    for c in (0, 1):
        weights = (train & (y == c)).astype(np.float64)  # (J, n)
        centroids.append(weights @ x / weights.sum(axis=1, keepdims=True))  # (J, d)
    d0 = ((x[None] - centroids[0][:, None]) ** 2).sum(-1)  # (J, n)
    d1 = ((x[None] - centroids[1][:, None]) ** 2).sum(-1)
    correct = ((d1 < d0).astype(np.int64) == y[None]) & val
    return correct.sum(axis=1) / val.sum(axis=1)


def null_rejection_rates(
    sims: int, *, n: int = 200, k: int = 10, repeats: int = 10, seed: int = 0
) -> tuple[float, float]:
    """How often the corrected and the naive test reject at 0.05 when A and B are equally good:
    each simulation draws a fresh data set of two Gaussian classes whose two halves of features
    separate them equally well; A is a nearest-centroid classifier on the first half, B on the
    second, both evaluated on the same repeated k-fold splits."""
    rng = np.random.default_rng(seed)
    rejected = np.zeros(2)
    for _ in range(sims):
        y = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 4)) + 0.5 * y[:, None]
        val = fold_masks(n, k, repeats, rng)
        diffs = centroid_accuracy(x[:, 2:], y, val) - centroid_accuracy(x[:, :2], y, val)
        rejected += [
            corrected_ttest(diffs, folds_ratio(k)).p < 0.05,
            corrected_ttest(diffs, 0.0).p < 0.05,
        ]
    corrected, naive = rejected / sims
    return float(corrected), float(naive)


def test_null_simulation_corrected_test_keeps_its_level_naive_does_not() -> None:
    started = time.perf_counter()
    corrected, naive = null_rejection_rates(2000)
    print(f"10x10 CV, 2000 null simulations: corrected {corrected:.3f}, naive {naive:.3f}")
    # measured 0.038 and 0.556 with this seed: the binomial standard error at 0.05 is 0.005
    assert 0.025 <= corrected <= 0.075
    assert naive >= 0.3
    assert time.perf_counter() - started < 60
