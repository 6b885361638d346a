"""Chefer et al.'s perturbation test of an explanation method, batched, and its record.

For each sample the patches (or tokens) are ranked by the method's relevance for the class the
model predicts. *Positive* perturbation removes the 10%, 20%, ..., 90% most relevant ones,
*negative* the least relevant; the model's accuracy against the true labels is measured at each
step. A faithful method makes the accuracy fall fast when the relevant patches go (a low
positive AUC) and slowly when the irrelevant ones go (a high negative AUC).

Exactly what is computed:

- **Removing** a patch sets all its pixels, every channel, to ``fill``: ``"zero"`` (the default:
  the background of the digits, and the mean of a normalised image) or ``"mean"`` (each
  channel's mean over the evaluated data). The patch of a score is the ``(H/h) x (W/w)`` block of
  pixels at its place in the row-major grid ``(h, w)`` of the explanation.
- **How many**: at step ``s`` of ``N`` patches, ``round(s * N)`` are removed; ties in the
  ranking go by patch order (a stable sort).
- **AUC**: the trapezoid rule over ``x = 0, *steps`` (by default 0, 0.1, ..., 0.9) of the
  accuracy in [0, 1], the unperturbed accuracy at ``x = 0``, divided by the width of the range
  (0.9): the mean accuracy over the removal range, so a method whose removals change nothing
  scores the plain accuracy.
- **Removing a token** (classifiers of token inputs) masks it out: its ``<input>_mask`` entry
  becomes False, so no attention reads it and no pooling counts it, exactly as padding is
  treated; its id and position stay (a pad or mask id the model never saw would change its
  input instead of removing something from it). Only real tokens are ranked and counted (at
  step ``s`` of a sample with ``n`` real tokens, ``round(s * n)`` go), and one always stays.
  ``fill`` applies to images only. A model that ignores ``<input>_mask`` would see nothing
  removed; every compiled spec honours it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from archlab.compiler.model import CompiledModel
from archlab.runners.data import TaskData
from archlab.runners.explain import METHODS, ExplainError, explain

STEPS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
Fill = Literal["zero", "mean"]


def auc(x: Sequence[float], accuracy: Sequence[float]) -> float:
    """The trapezoid rule of ``accuracy`` over ``x``, divided by the width ``x[-1] - x[0]``."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    if xs.shape != ys.shape or len(xs) < 2:
        raise ValueError(f"auc needs two or more points with one accuracy each: {xs}, {ys}")
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
    return area / float(xs[-1] - xs[0])


def perturbation_auc(
    model: CompiledModel,
    data: TaskData,
    methods: Sequence[str] = METHODS,
    *,
    batch_size: int = 64,
    steps: Sequence[float] = STEPS,
    fill: Fill = "zero",
) -> dict[str, dict[str, Any]]:
    """Chefer's perturbation test of each of ``methods`` on every sample of ``data``.

    Returns ``{method: {"auc_pos", "auc_neg", "accuracy_pos", "accuracy_neg", "x"}}``; the
    accuracy lists hold the unperturbed accuracy first, then one value per step (``x`` gives
    the removed fraction of each). Batches of ``batch_size`` give what one batch gives."""
    name, kind = _removable_input(data)
    _check_request(methods, steps, fill, batch_size)
    device = next(model.parameters()).device
    value = _fill_value(data.inputs[name], fill).to(device) if kind == "image" else None
    labels = data.targets
    right = {m: np.zeros((2, len(steps)), dtype=np.int64) for m in methods}
    plain = 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(data), batch_size):
            inputs: dict[str, Any] = {
                k: v[start : start + batch_size].to(device) for k, v in data.inputs.items()
            }
            y = labels[start : start + batch_size].to(device)
            with torch.no_grad():
                plain += int((model(**inputs).argmax(-1) == y).sum())
            for method in methods:
                scores = explain(model, method=method, **inputs)
                if value is not None:
                    right[method] += _perturbed_right(model, name, inputs, y, scores, steps, value)
                else:
                    right[method] += _masked_right(model, name, inputs, y, scores.scores, steps)
    finally:
        model.train(was_training)
    n = len(data)
    xs = [0.0, *(float(s) for s in steps)]
    results: dict[str, dict[str, Any]] = {}
    for method in methods:
        pos = [plain / n, *(float(c) / n for c in right[method][0])]
        neg = [plain / n, *(float(c) / n for c in right[method][1])]
        results[method] = {
            "auc_pos": auc(xs, pos),
            "auc_neg": auc(xs, neg),
            "accuracy_pos": pos,
            "accuracy_neg": neg,
            "x": xs,
        }
    return results


def _perturbed_right(
    model: CompiledModel,
    name: str,
    inputs: dict[str, Tensor],
    y: Tensor,
    explanation: Any,
    steps: Sequence[float],
    value: Tensor,
) -> np.ndarray:
    """Correct predictions `(2, steps)` with the most (row 0) and least (row 1) relevant patches
    of each sample removed, at each step."""
    x = inputs[name]
    scores: Tensor = explanation.scores
    if explanation.grid is None:
        raise ExplainError(f"the explanation of `{name}` has no patch grid to remove patches by")
    h, w = explanation.grid
    B, N = scores.shape
    H, W = x.shape[-2:]
    if H % h or W % w:
        raise ExplainError(f"an image of {H}x{W} pixels does not split into the {h}x{w} grid")
    order = torch.argsort(scores, dim=1, descending=True, stable=True)  # most relevant first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=order.device).expand(B, N))
    counts = np.zeros((2, len(steps)), dtype=np.int64)
    for j, step in enumerate(steps):
        k = round(float(step) * N)
        for row, removed in enumerate((rank < k, rank >= N - k)):  # (B, N) patches to remove
            mask = removed.reshape(B, 1, h, 1, w, 1).to(x.dtype)
            mask = mask.expand(B, 1, h, H // h, w, W // w).reshape(B, 1, H, W)
            perturbed = x * (1 - mask) + value * mask
            with torch.no_grad():
                counts[row, j] = int((model(**{**inputs, name: perturbed}).argmax(-1) == y).sum())
    return counts


def _masked_right(
    model: CompiledModel,
    name: str,
    inputs: dict[str, Tensor],
    y: Tensor,
    scores: Tensor,
    steps: Sequence[float],
) -> np.ndarray:
    """Correct predictions `(2, steps)` with the most (row 0) and least (row 1) relevant real
    tokens of each sample masked out, at each step (one real token always stays)."""
    tokens = inputs[name]
    if scores.shape != tokens.shape:
        raise ExplainError(
            f"the explanation covers {scores.shape[1]} positions but `{name}` has "
            f"{tokens.shape[1]} tokens; the perturbation test needs one score per token"
        )
    B, N = tokens.shape
    key = f"{name}_mask"
    real = inputs[key].bool() if key in inputs else torch.ones_like(tokens, dtype=torch.bool)
    n = real.sum(dim=1, keepdim=True)  # (B, 1)
    ranked = scores.masked_fill(~real, float("-inf"))  # padding ranks last
    order = torch.argsort(ranked, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=order.device).expand(B, N))
    counts = np.zeros((2, len(steps)), dtype=np.int64)
    for j, step in enumerate(steps):
        k = torch.minimum(torch.round(n * float(step)), (n - 1).clamp(min=0)).long()
        for row, removed in enumerate((rank < k, (rank >= n - k) & (rank < n))):
            with torch.no_grad():
                logits = model(**{**inputs, key: real & ~removed})
            counts[row, j] = int((logits.argmax(-1) == y).sum())
    return counts


def _removable_input(data: TaskData) -> tuple[str, Literal["image", "tokens"]]:
    """The one input whose parts the test removes: an image (patches) or a token sequence
    (tokens, with further inputs such as ``token_types`` passed along), or a clear refusal."""
    if data.task != "classify":
        raise ExplainError(
            f"the perturbation test measures a classifier's accuracy; {data.source} is "
            f"{data.task} data"
        )
    main = {k: v for k, v in data.inputs.items() if not k.endswith("_mask")}
    images = [k for k, v in main.items() if v.dim() == 4 and v.is_floating_point()]
    tokens = [k for k, v in main.items() if v.dim() == 2 and not v.is_floating_point()]
    if len(images) == 1 and len(main) == 1:
        return images[0], "image"
    if not images and tokens:
        masked = [k for k in tokens if f"{k}_mask" in data.inputs]
        if len(tokens) == 1 or len(masked) == 1:
            return (tokens[0] if len(tokens) == 1 else masked[0]), "tokens"
    raise ExplainError(
        "the perturbation test removes the patches of one image input or the tokens of one "
        f"token input; {data.source} gives {', '.join(data.inputs)}"
    )


def _check_request(methods: Sequence[str], steps: Sequence[float], fill: str, batch: int) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ExplainError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(METHODS)}"
        )
    if not steps or any(not 0 < s < 1 for s in steps) or list(steps) != sorted(set(steps)):
        raise ExplainError(f"steps must rise strictly inside (0, 1): {list(steps)}")
    if fill not in ("zero", "mean"):
        raise ExplainError(f"fill must be zero or mean, not {fill!r}")
    if batch < 1:
        raise ExplainError(f"batch_size must be at least 1, not {batch}")


def _fill_value(images: Tensor, fill: str) -> Tensor:
    """What a removed pixel becomes: 0, or each channel's mean over the data `(1, C, 1, 1)`."""
    if fill == "zero":
        return torch.zeros(1, images.shape[1], 1, 1, dtype=images.dtype)
    return images.mean(dim=(0, 2, 3), keepdim=True)


def metric_names(method: str) -> tuple[str, str]:
    """The registry's names of a method's positive and negative AUC."""
    return f"auc_pos_{method}", f"auc_neg_{method}"


def record_perturbation(
    registry: Any,
    run_id: str,
    results: Mapping[str, Mapping[str, Any]],
    *,
    spec: Any,
    record: Mapping[str, Any] | None = None,
    started: float | None = None,
) -> str:
    """Record ``results`` as an ``eval`` run linked to training run ``run_id`` (tag and config
    ``evaluates``, as ``arch eval`` links its runs), with ``auc_pos_<method>`` (lower is better)
    and ``auc_neg_<method>`` (higher is better) so ``arch runs`` compares the methods; the
    accuracy curves go in its config. Returns the eval run's id."""
    directions: dict[str, str] = {}
    metrics: dict[str, float] = {}
    for method, result in results.items():
        pos, neg = metric_names(method)
        directions[pos], directions[neg] = "min", "max"
        metrics[pos], metrics[neg] = float(result["auc_pos"]), float(result["auc_neg"])
    registry.declare_metrics(directions)
    config = {
        "evaluates": run_id,
        "evaluation": "perturbation",
        **(record or {}),
        "curves": {
            m: {k: list(r[k]) for k in ("x", "accuracy_pos", "accuracy_neg")}
            for m, r in results.items()
        },
    }
    with registry.start_run(
        spec,
        config,
        kind="eval",
        tags={"evaluates": run_id, "evaluation": "perturbation"},
        started=started,
    ) as handle:
        handle.log_metrics(metrics, step=0)
    return str(handle.id)


def evaluate_run(
    run_id: str,
    data_source: str | None,
    methods: Sequence[str],
    registry: Any,
    *,
    batch_size: int = 64,
    fill: Fill = "zero",
    device: str | None = None,
) -> dict[str, Any]:
    """The perturbation test of training run ``run_id``'s best checkpoint on ``data_source``
    (every example; without one, the run's own validation split), recorded as an ``eval`` run
    linked to it. Returns ``{"run": eval run id, "evaluates", "examples", "results"}``."""
    from archlab.runners.train import run_model_and_data

    _check_request(methods, STEPS, fill, batch_size)
    loaded = run_model_and_data(run_id, registry, data_source=data_source, device=device)
    data = loaded.data.subset(loaded.rows)
    started = time.time()
    results = perturbation_auc(loaded.model, data, methods, batch_size=batch_size, fill=fill)
    record = {
        **loaded.record,
        "fill": fill,
        "batch_size": batch_size,
        "methods": list(methods),
        "steps": list(STEPS),
    }
    eval_id = record_perturbation(
        registry, run_id, results, spec=loaded.model.spec, record=record, started=started
    )
    return {"run": eval_id, "evaluates": run_id, "examples": len(data), "results": results}
