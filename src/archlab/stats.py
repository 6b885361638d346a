"""Paired statistics over cross-validation folds: is B better than A on the same splits?

Pure functions of numbers (no registry, no torch); ``Registry.compare_groups`` feeds them the
per-fold differences of two CV groups that share every split.

- ``corrected_ttest``: the corrected resampled t-test (Nadeau & Bengio 2003, "Inference for the
  generalization error", Machine Learning 52; for repeated k-fold Bouckaert & Frank 2004,
  "Evaluating the replicability of significance tests for comparing learning algorithms",
  PAKDD). The J = k·r fold differences share training examples, so their sample variance
  under-states the variance of their mean; the test scales it by ``1/J + n2/n1`` (n2/n1 the
  ratio of validation to training sizes) instead of ``1/J``. With ``ratio=0`` it is the naive
  paired t-test, kept for comparison only.
- ``correlated_bayes``: the Bayesian correlated t-test (Benavoli, Corani, Demšar & Zaffalon 2017,
  "Time for a change", JMLR 18): the posterior of the mean difference is a Student t with J − 1
  degrees of freedom, centre d̄ and the corrected scale; the probabilities below, inside and above
  a region of practical equivalence (ROPE) ±R. Equal to ``baycomp.two_on_single`` on the same
  numbers, a zero variance included.
- ``five_by_two``: Dietterich's 5x2cv paired t-test (1998, "Approximate statistical tests for
  comparing supervised classification learning algorithms", Neural Computation 10) and Alpaydin's
  combined 5x2cv F test (1999, Neural Computation 11), for 5 repeats of 2-fold CV.
- ``holm``: Holm's (1979) step-down adjustment of several p-values.

Differences are ordered as the registry's folds are: repeat r, fold f is ``r * k + f``.
Shapes: ``diffs`` (J,) with J = k · repeats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats


@dataclass(frozen=True)
class TTest:
    """A t-test of the mean difference: ``t`` with ``df`` degrees of freedom, its two-sided
    ``p``, and the ``level`` confidence interval ``ci_low``..``ci_high`` of the mean
    difference. ``scale`` is the standard error used (corrected or naive)."""

    t: float
    df: int
    p: float
    ci_low: float
    ci_high: float
    scale: float
    level: float


@dataclass(frozen=True)
class Posterior:
    """The Bayesian correlated t-test's answer for a difference B − A: the probabilities that it
    lies below −rope, inside [−rope, rope], and above rope (they sum to 1; ``p_rope`` is 0 when
    rope is 0), with the posterior's centre, scale and degrees of freedom."""

    p_below: float
    p_rope: float
    p_above: float
    mean: float
    scale: float
    df: int
    rope: float


@dataclass(frozen=True)
class FiveByTwo:
    """Dietterich's 5x2cv t (5 degrees of freedom) and Alpaydin's combined F (10 and 5), each with
    its p-value (two-sided for t)."""

    t: float
    p: float
    f: float
    p_f: float


def _checked(diffs: Sequence[float]) -> np.ndarray:
    values = np.asarray(diffs, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(f"a paired test needs at least 2 differences, not {len(values)}")
    if not np.all(np.isfinite(values)):
        raise ValueError("the differences must be finite numbers (a fold's value is NaN or inf)")
    return values


def folds_ratio(k: int) -> float:
    """n2/n1 for k-fold CV: one fold validates, k − 1 train (baycomp's convention)."""
    if k < 2:
        raise ValueError(f"k-fold CV has k >= 2 folds, not {k}")
    return 1.0 / (k - 1)


def _zero_or_infinite(mean: float) -> float:
    """A t statistic whose scale is 0: 0 for a zero mean, else an infinity of the mean's sign."""
    return 0.0 if mean == 0 else math.copysign(math.inf, mean)


def corrected_ttest(diffs: Sequence[float], ratio: float, level: float = 0.95) -> TTest:
    """The corrected resampled t-test of the mean of ``diffs`` (J,) against 0:
    t = d̄ / sqrt((1/J + ratio) σ̂²) with σ̂² the sample variance (ddof 1), df = J − 1, the two-sided
    p, and the interval d̄ ± t_{(1+level)/2} · sqrt(...). ``ratio`` is n2/n1 (validation over
    training size; ``folds_ratio(k)`` for k-fold); ``ratio=0`` gives the naive paired t-test.

    A zero variance (every difference equal) gives t = 0 and p = 1 for a zero mean, else t = ±inf
    and p = 0, and the interval [d̄, d̄]: never NaN."""
    if not (math.isfinite(ratio) and ratio >= 0):
        raise ValueError(f"the size ratio n2/n1 must be a finite number >= 0, not {ratio!r}")
    if not 0 < level < 1:
        raise ValueError(f"the confidence level must be in (0, 1), not {level!r}")
    values = _checked(diffs)
    n = len(values)
    mean = float(np.mean(values))
    variance = float(np.var(values, ddof=1))
    scale = math.sqrt((1.0 / n + ratio) * variance)
    df = n - 1
    if scale == 0:
        t = _zero_or_infinite(mean)
        p = 1.0 if t == 0 else 0.0
        return TTest(t, df, p, mean, mean, 0.0, level)
    t = mean / scale
    p = float(2 * scipy_stats.t.sf(abs(t), df))
    half = float(scipy_stats.t.ppf((1 + level) / 2, df)) * scale
    return TTest(t, df, min(p, 1.0), mean - half, mean + half, scale, level)


def correlated_bayes(diffs: Sequence[float], ratio: float, rope: float = 0.0) -> Posterior:
    """The Bayesian correlated t-test of ``diffs`` (J,): posterior Student t with df J − 1,
    centre d̄ and scale sqrt((1/J + ratio) σ̂²); P(below −rope), P(inside ±rope), P(above rope).

    As ``baycomp.CorrelatedTTest`` does: with rope 0, P(inside) is 0; a zero variance puts all
    the mass at d̄ (half on each side of 0 when d̄ = 0 and rope = 0)."""
    if not (math.isfinite(rope) and rope >= 0):
        raise ValueError(f"the ROPE half-width must be a finite number >= 0, not {rope!r}")
    if not (math.isfinite(ratio) and ratio >= 0):
        raise ValueError(f"the size ratio n2/n1 must be a finite number >= 0, not {ratio!r}")
    values = _checked(diffs)
    n = len(values)
    mean = float(np.mean(values))
    variance = float(np.var(values, ddof=1)) * (1.0 / n + ratio)
    scale = math.sqrt(variance)
    df = n - 1
    if variance == 0:
        if rope == 0:
            above = float(mean > 0) + 0.5 * float(mean == 0)
            return Posterior(1.0 - above, 0.0, above, mean, 0.0, df, rope)
        below, above = float(mean < -rope), float(mean > rope)
        return Posterior(below, 1.0 - below - above, above, mean, 0.0, df, rope)
    below = float(scipy_stats.t.cdf(-rope, df, mean, scale))
    above = float(scipy_stats.t.sf(rope, df, mean, scale))
    inside = 0.0 if rope == 0 else max(0.0, 1.0 - below - above)
    return Posterior(below, inside, above, mean, scale, df, rope)


def five_by_two(diffs: Sequence[float]) -> FiveByTwo:
    """Dietterich's 5x2cv t and Alpaydin's combined F from the 10 differences of 5 repeats of
    2-fold CV (repeat i, fold j at ``2 i + j``): with s_i² = Σ_j (d_ij − d̄_i)²,
    t = d_11 / sqrt(Σ s_i² / 5) (df 5) and f = Σ d_ij² / (2 Σ s_i²) (df 10 and 5).

    Where Σ s_i² = 0: t = 0 (p = 1) when d_11 = 0, else ±inf (p = 0); f = 0 (p = 1) when every
    difference is 0, else inf (p = 0)."""
    values = _checked(diffs)
    if len(values) != 10:
        raise ValueError(
            f"the 5x2cv tests take 10 differences (5 repeats of 2 folds), not {len(values)}"
        )
    pairs = values.reshape(5, 2)  # (repeat, fold)
    spread = float(np.sum((pairs - pairs.mean(axis=1, keepdims=True)) ** 2))
    squares = float(np.sum(values**2))
    first = float(values[0])
    if spread == 0:
        t = _zero_or_infinite(first)
        f = 0.0 if squares == 0 else math.inf
    else:
        t = first / math.sqrt(spread / 5)
        f = squares / (2 * spread)
    p = 1.0 if t == 0 else 0.0 if math.isinf(t) else float(2 * scipy_stats.t.sf(abs(t), 5))
    p_f = 1.0 if f == 0 else 0.0 if math.isinf(f) else float(scipy_stats.f.sf(f, 10, 5))
    return FiveByTwo(t, min(p, 1.0), f, p_f)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: sorted ascending, the i-th
    smallest (0-based) is multiplied by m − i, then made non-decreasing and capped at 1. A
    hypothesis is rejected at level α exactly when its adjusted p-value is <= α."""
    values = [float(p) for p in pvalues]
    for p in values:
        if not 0 <= p <= 1:
            raise ValueError(f"a p-value lies in [0, 1], not {p!r}")
    m = len(values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=values.__getitem__)):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted
