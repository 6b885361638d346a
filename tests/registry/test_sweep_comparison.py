"""``Registry.compare_sweep`` and ``arch runs compare --sweep S --against best``: every complete
trial of a sweep against the best one, each by ``compare_groups``, the p-values Holm-adjusted
over the trials; incomplete trials left out; too few trials or a missing metric refused."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.model_selection import KFold

from archlab import stats
from archlab.cli import cli
from archlab.registry import Registry, RegistryError

Doc = dict[str, Any]
K = 5
NOISE = np.array([0.03, -0.03, 0.02, -0.02, -0.005])


def record_trial(
    registry: Registry, spec: Doc, trial: int, finals: list[float], folds: int = K
) -> str:
    """Trial ``trial`` of sweep ``s``: a CV group of K folds (the sweep's shared splits), of
    which the first ``folds`` completed with val_acc ``finals``."""
    config = {"lr": 1e-3 * (trial + 1), "data_sha256": "d" * 64}
    group = registry.start_cv(spec, config, k=K, seed=0)
    splits = list(KFold(n_splits=K, shuffle=True, random_state=0).split(np.arange(50)))
    for fold, (train, val) in enumerate(splits[:folds]):
        with registry.start_run(
            spec, config, cv_group=group, fold=fold, train_indices=train.tolist(),
            val_indices=val.tolist(), tags={"sweep": "s", "trial": str(trial)},
        ) as run:  # fmt: skip
            run.log_metrics({"val_acc": finals[fold]}, step=0)
    return group.id


def _sweep(registry: Registry, spec: Doc) -> dict[str, str]:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.7, 0.8, K)
    groups = {
        "0": record_trial(registry, spec, 0, (base + 0.05).tolist()),  # the best, clearly
        # a little below the best on average, noisily: not distinguishable from it
        "1": record_trial(registry, spec, 1, (base + 0.05 + NOISE).tolist()),
        "2": record_trial(registry, spec, 2, (base - 0.10).tolist()),  # clearly worse
    }
    record_trial(registry, spec, 3, (base + 0.2).tolist(), folds=3)  # pruned: left out
    return groups


def test_every_trial_is_compared_with_the_best_and_holm_adjusted(
    registry: Registry, spec: Doc
) -> None:
    groups = _sweep(registry, spec)
    result = registry.compare_sweep("s", "val_acc")
    assert result.best_trial == "0" and result.best_group == groups["0"]
    assert [t.trial for t in result.trials] == ["1", "2"]  # best first, then the rest by mean
    for t in result.trials:
        direct = registry.compare_groups(groups["0"], t.group, "val_acc")
        assert t.comparison.corrected.p == direct.corrected.p
        assert t.comparison.mean_diff == pytest.approx(direct.mean_diff)
    raw = [t.comparison.corrected.p for t in result.trials]
    assert [t.p_holm for t in result.trials] == stats.holm(raw)
    assert all(t.p_holm >= p for t, p in zip(result.trials, raw, strict=True))
    assert result.worse() == ["2"] and result.trials[1].comparison.mean_diff < 0


def test_too_few_trials_and_a_missing_metric_are_refused(registry: Registry, spec: Doc) -> None:
    record_trial(registry, spec, 0, [0.7] * K)
    with pytest.raises(RegistryError, match="1 complete trial"):
        registry.compare_sweep("s")
    record_trial(registry, spec, 1, [0.8] * K)
    with pytest.raises(RegistryError, match="has no 'val_loss'"):
        registry.compare_sweep("s", "val_loss")


def test_the_cli_prints_the_table_and_the_json(
    registry: Registry, spec: Doc, registry_url: str
) -> None:
    _sweep(registry, spec)
    args = ["runs", "compare", "--sweep", "s", "--against", "best", "--registry", registry_url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "against the best, trial 0" in result.output and "(Holm)" in result.output
    assert "worse than the best at 0.05 for the whole family (Holm): 2" in result.output
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    doc = json.loads(result.output)
    assert doc["best"]["trial"] == "0" and [t["trial"] for t in doc["trials"]] == ["1", "2"]
    assert {"p", "p_holm", "mean_diff", "p_trial_better"} <= set(doc["trials"][0])
    bad = CliRunner().invoke(
        cli, ["runs", "compare", "--sweep", "nope", "--registry", registry_url]
    )
    assert bad.exit_code == 2 and "0 complete trial" in bad.output + (bad.stderr or "")
    both = CliRunner().invoke(cli, [*args, "abc12345"])
    assert both.exit_code == 2 and "takes no ids" in both.output + (both.stderr or "")
