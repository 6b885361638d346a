"""Two CV groups compared fold for fold (``Registry.compare_groups``): is B better than A?

The groups must be the same splits of the same data: the same data hash (their configuration's
``data_sha256``), k, repeats, CV seed, and for every fold (repeat r, fold f at ``r * k + f``) the
same training and validation fingerprints. Then fold j gives the difference d_j = B − A of the
metric (its final value, or its best with ``at="best"``), and ``archlab.stats`` tests them: the
corrected resampled t-test, the naive one beside it, the Bayesian correlated t-test with a ROPE,
and Dietterich's / Alpaydin's 5x2cv tests for 5 repeats of 2 folds. ``verdict`` says in words
what the numbers mean. Imports no torch; scipy (through ``archlab.stats``) loads with the first
comparison, so the CLI imports this module's names without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archlab.registry.engine import RegistryError

if TYPE_CHECKING:
    from archlab import stats
    from archlab.metrics import Direction
    from archlab.registry.records import CVGroup, Run
    from archlab.registry.store import Registry

AT = ("final", "best")
RATIOS = ("folds", "sizes")
ALPHA = 0.05  # the level the words "significant" and "not significant" refer to
DECIDED = 0.95  # a posterior probability at least this high is called a decision


@dataclass(frozen=True)
class GroupComparison:
    """CV group ``b`` against ``a`` by ``metric``: the fold runs and values paired (lists of
    J = k · repeats, fold order), ``diffs`` = B − A, and the tests of ``archlab.stats``.

    ``p_a_better`` / ``p_b_better`` follow the metric's ``direction``: for a metric where lower
    is better (a loss), A is better where B − A > rope. ``size_ratio`` is the n2/n1 used."""

    a: str
    b: str
    metric: str
    at: str
    direction: Direction
    k: int
    repeats: int
    rope: float
    ratio: str
    size_ratio: float
    runs_a: list[str]
    runs_b: list[str]
    values_a: list[float]
    values_b: list[float]
    diffs: list[float]
    mean_diff: float
    corrected: stats.TTest
    naive: stats.TTest
    posterior: stats.Posterior
    p_a_better: float
    p_rope: float
    p_b_better: float
    five_by_two: stats.FiveByTwo | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``arch runs compare A B --json``: ``metric, k, repeats, diffs, mean_diff,
        t, p, ci_low, ci_high, t_naive, p_naive, p_a_better, p_rope, p_b_better``, and for 5x2
        CV ``t_5x2cv, p_5x2cv, f_5x2cv, p_f_5x2cv``."""
        out: dict[str, Any] = {
            "metric": self.metric,
            "k": self.k,
            "repeats": self.repeats,
            "diffs": list(self.diffs),
            "mean_diff": self.mean_diff,
            "t": self.corrected.t,
            "p": self.corrected.p,
            "ci_low": self.corrected.ci_low,
            "ci_high": self.corrected.ci_high,
            "t_naive": self.naive.t,
            "p_naive": self.naive.p,
            "p_a_better": self.p_a_better,
            "p_rope": self.p_rope,
            "p_b_better": self.p_b_better,
        }
        if self.five_by_two is not None:
            out.update(
                t_5x2cv=self.five_by_two.t,
                p_5x2cv=self.five_by_two.p,
                f_5x2cv=self.five_by_two.f,
                p_f_5x2cv=self.five_by_two.p_f,
            )
        return out


def compare_groups(
    registry: Registry,
    a: str,
    b: str,
    metric: str,
    *,
    at: str = "final",
    rope: float = 0.01,
    ratio: str = "folds",
) -> GroupComparison:
    """``Registry.compare_groups``: pair the folds of CV groups ``a`` and ``b`` (refusing with
    ``RegistryError`` where they are not the same splits) and test B − A of ``metric``."""
    from archlab import stats

    if at not in AT:
        raise RegistryError(f"at is one of {', '.join(AT)}, not {at!r}")
    if ratio not in RATIOS:
        raise RegistryError(f"ratio is one of {', '.join(RATIOS)}, not {ratio!r}")
    if not (isinstance(rope, int | float) and math.isfinite(rope) and rope >= 0):
        raise RegistryError(f"the ROPE half-width is a finite number >= 0, not {rope!r}")
    if a == b:
        raise RegistryError(f"compare two different CV groups, not {a} with itself")
    group_a, group_b = _group(registry, a, "A"), _group(registry, b, "B")
    _check_splits(group_a, group_b)
    folds_a, folds_b = _paired_runs(registry, group_a, group_b)
    values_a = [_value(run, metric, at, group_a.id) for run in folds_a]
    values_b = [_value(run, metric, at, group_b.id) for run in folds_b]
    diffs = [vb - va for va, vb in zip(values_a, values_b, strict=True)]
    size_ratio = stats.folds_ratio(group_a.k) if ratio == "folds" else _sizes_ratio(folds_a)
    posterior = stats.correlated_bayes(diffs, size_ratio, float(rope))
    direction = registry.metric_direction(metric)
    below, above = posterior.p_below, posterior.p_above
    return GroupComparison(
        a=group_a.id,
        b=group_b.id,
        metric=metric,
        at=at,
        direction=direction,
        k=group_a.k,
        repeats=group_a.repeats,
        rope=float(rope),
        ratio=ratio,
        size_ratio=size_ratio,
        runs_a=[r.id for r in folds_a],
        runs_b=[r.id for r in folds_b],
        values_a=values_a,
        values_b=values_b,
        diffs=diffs,
        mean_diff=posterior.mean,
        corrected=stats.corrected_ttest(diffs, size_ratio),
        naive=stats.corrected_ttest(diffs, 0.0),
        posterior=posterior,
        p_a_better=above if direction == "min" else below,
        p_rope=posterior.p_rope,
        p_b_better=below if direction == "min" else above,
        five_by_two=(stats.five_by_two(diffs) if (group_a.k, group_a.repeats) == (2, 5) else None),
    )


def _group(registry: Registry, ident: str, which: str) -> CVGroup:
    try:
        return registry.group(ident)
    except RegistryError:
        try:
            registry.get(ident)
        except RegistryError:
            raise RegistryError(f"{which}: no CV group {ident!r} in this registry") from None
        raise RegistryError(
            f"{which}: {ident} is a run, not a CV group; compare two CV groups (arch train "
            "--folds K records one), or runs side by side with arch runs compare ID ID..."
        ) from None


def _check_splits(a: CVGroup, b: CVGroup) -> None:
    """The group-level settings of a fold-for-fold pairing: data hash, k, repeats, CV seed."""
    data_a, data_b = a.config.get("data_sha256"), b.config.get("data_sha256")
    for group, data in ((a, data_a), (b, data_b)):
        if data is None:
            raise RegistryError(
                f"CV group {group.id} records no data hash (config data_sha256), so its folds "
                "cannot be shown to split the same data; arch train records it (Python: pass "
                "config={'data_sha256': ...} to start_cv)"
            )
    differ = [
        f"{name} {x!r} (A) vs {y!r} (B)"
        for name, x, y in (
            ("data hash", data_a, data_b),
            ("k", a.k, b.k),
            ("repeats", a.repeats, b.repeats),
            ("CV seed", a.seed, b.seed),
        )
        if x != y
    ]
    if differ:
        raise RegistryError(
            f"CV groups {a.id} and {b.id} do not pair fold for fold: {'; '.join(differ)}. "
            "Compare groups trained on the same --data with the same --folds, --repeats and "
            "--cv-seed"
        )


def _paired_runs(registry: Registry, a: CVGroup, b: CVGroup) -> tuple[list[Run], list[Run]]:
    """Each group's completed fold runs in fold order; refuses at the first fold that is
    missing from either group or whose training or validation examples differ."""
    runs_a, runs_b = registry.fold_runs(a.id), registry.fold_runs(b.id)
    out_a, out_b = [], []
    for fold in range(a.k * a.repeats):
        where = f"fold {fold} (repeat {fold // a.k}, fold {fold % a.k})"
        for group, runs in ((a, runs_a), (b, runs_b)):
            if fold not in runs:
                raise RegistryError(
                    f"{where} of CV group {group.id} has no completed run; finish it "
                    f"(arch train ... --cv-group {group.id} --fold {fold}) before comparing"
                )
        ra, rb = runs_a[fold], runs_b[fold]
        assert ra.cv is not None and rb.cv is not None  # fold runs of a group
        for side, x, y in (
            ("training", ra.cv.train_sha256, rb.cv.train_sha256),
            ("validation", ra.cv.val_sha256, rb.cv.val_sha256),
        ):
            if x is None or y is None:
                missing = ra.id if x is None else rb.id
                raise RegistryError(
                    f"{where} differs or cannot be checked: run {missing} records no {side} "
                    "fingerprint (start_run(train_indices=, val_indices=) records them)"
                )
            if x != y:
                raise RegistryError(
                    f"{where} differs: its {side} examples are not the same in {a.id} (run "
                    f"{ra.id}, sha256 {x[:12]}) and {b.id} (run {rb.id}, sha256 {y[:12]}); "
                    "the groups were split differently, so their folds cannot be paired"
                )
        out_a.append(ra)
        out_b.append(rb)
    return out_a, out_b


def _value(run: Run, metric: str, at: str, group: str) -> float:
    """The fold run's final (or best) value of ``metric``; refuses a missing or NaN one."""
    summary = run.summaries.get(metric)
    if summary is None:
        known = ", ".join(sorted(run.summaries)) or "none"
        raise RegistryError(
            f"run {run.id} (fold {run.cv.fold if run.cv else '?'} of CV group {group}) has no "
            f"metric {metric!r}; metrics recorded: {known}"
        )
    value = summary.final if at == "final" else summary.best
    if not math.isfinite(value):
        raise RegistryError(
            f"run {run.id} (fold {run.cv.fold if run.cv else '?'} of CV group {group}): its {at} "
            f"{metric} is {value}, so the folds cannot be compared by it"
        )
    return float(value)


def _sizes_ratio(runs: list[Run]) -> float:
    """The recorded mean validation size over the mean training size (n2/n1)."""
    n_train = [r.cv.n_train for r in runs if r.cv is not None]
    n_val = [r.cv.n_val for r in runs if r.cv is not None]
    if any(n is None or n <= 0 for n in (*n_train, *n_val)) or not n_train:
        raise RegistryError(
            "ratio 'sizes' needs every fold's recorded training and validation sizes; use "
            "ratio 'folds' (1/(k - 1))"
        )
    return (sum(n_val) / len(n_val)) / (sum(n_train) / len(n_train))  # type: ignore[arg-type]


def verdict(c: GroupComparison, alpha: float = ALPHA) -> list[str]:
    """What the numbers say, in words: which group is ahead and by how much with its interval,
    whether the corrected test calls it significant at ``alpha``, the naive test labelled as
    such, the Bayesian probabilities and, for 5x2 CV, Dietterich's and Alpaydin's tests."""
    j = len(c.diffs)
    level = round(c.corrected.level * 100)
    ci = f"{level}% CI {c.corrected.ci_low:+.4g} to {c.corrected.ci_high:+.4g}"
    gap = abs(c.mean_diff)
    if c.mean_diff == 0:
        lead = f"A and B are level: the mean difference in {c.metric} over {j} folds is 0 ({ci})"
    else:
        b_ahead = (c.mean_diff > 0) == (c.direction == "max")
        better, worse = ("B", "A") if b_ahead else ("A", "B")
        lead = (
            f"{better} is better than {worse} by {gap:.4g} in {c.at} {c.metric} "
            f"(mean of {j} fold differences B − A = {c.mean_diff:+.4g}; {ci})"
        )
    significant = c.corrected.p < alpha
    meaning = (
        f"significant at {alpha:g}: a difference this large is unlikely to be chance"
        if significant
        else f"not significant at {alpha:g}: the folds do not rule out chance"
    )
    lines = [
        lead,
        f"corrected resampled t-test (Nadeau & Bengio): t = {c.corrected.t:.3f}, "
        f"df {c.corrected.df}, p = {c.corrected.p:.3g}: {meaning}",
        f"naive paired t-test (treats overlapping folds as independent; too confident, shown "
        f"for comparison only): t = {c.naive.t:.3f}, p = {c.naive.p:.3g}",
        f"Bayesian correlated t-test, ROPE ±{c.rope:g}: P(A better) = {c.p_a_better:.3f}, "
        f"P(practically equivalent) = {c.p_rope:.3f}, P(B better) = {c.p_b_better:.3f}: "
        + _bayes_words(c),
    ]
    if c.five_by_two is not None:
        f = c.five_by_two
        lines.append(
            f"5x2cv: Dietterich's t = {f.t:.3f} (p = {f.p:.3g}), Alpaydin's F = {f.f:.3f} "
            f"(p = {f.p_f:.3g})"
        )
    return lines


def _bayes_words(c: GroupComparison) -> str:
    for p, words in (
        (c.p_b_better, "B is probably better"),
        (c.p_a_better, "A is probably better"),
        (c.p_rope, "A and B are practically equivalent"),
    ):
        if p >= DECIDED:
            return f"{words} (probability >= {DECIDED:g})"
    return f"no decision at {DECIDED:g}: more folds or repeats would tell"
