"""``arch explain``: relevance maps of a saved model or a run's checkpoint on samples of data.

``explain_run(source, data_source, methods=...)`` loads MODEL (a weights file archlab wrote) or
RUN's checkpoint on the CPU (a few samples need no accelerator), reads the data, picks samples by
row (``indices``) or the first ``count``, explains them with each method in one batch
(``runners.explain.explain``) and draws the result: for image inputs a PNG/SVG/PDF grid
(``viz.explain.draw_heatmaps``), for token inputs an HTML page (``viz.explain.token_html``).
Without ``data_source``, a run's samples come from its own validation split (recomputed from its
recorded configuration, as ``arch eval`` does), so the maps show data the model did not train on;
``indices`` then count within that split and the reported indices are rows of the data.

With a RUN and ``record`` (the default), what was drawn is recorded in its registry as an
``eval`` run linked to it (tag and config ``evaluates``, ``evaluation: explain``; the picture, or
the HTML page of token inputs, attached as a ``relevance-map`` artifact), after the picture is
written, so a failed drawing records nothing. A MODEL file records nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from archlab.errors import UserInputError
from archlab.runners.explain import METHODS, Explanation, explain
from archlab.runners.model_source import load_source, samples, token_speller
from archlab.runners.prune_show import display_images, image_input
from archlab.viz.explain import (
    HeatmapPanels,
    TokenPanels,
    draw_heatmaps,
    token_html,
    write_html,
)
from archlab.viz.save import check_output

if TYPE_CHECKING:
    from archlab.compiler.model import CompiledModel
    from archlab.registry import Run
    from archlab.runners.data import TaskData

DEFAULT_COUNT = 8
HTML_SUFFIXES = (".html", ".htm")


class ExplainRunError(UserInputError):
    """An ``arch explain`` request that cannot be served: the message says why."""


@dataclass(frozen=True)
class ExplainResult:
    """What ``explain_run`` computed and drew.

    ``scores[method]`` `(B, N)` raw relevance over the input's positions (no CLS tokens);
    ``targets[method]`` the explained class (or token) per sample; ``predictions`` the model's;
    ``labels`` the data's (None when it has none); ``indices`` each sample's row in the data;
    ``grid`` the patch grid of image inputs; ``tokens``/``token_panels`` for token inputs.
    For an encoder-decoder ``scores`` are over the source tokens and ``decoder_scores`` over
    the target tokens, the next token after the last one explained. ``eval_run`` is the eval
    run recording the picture (None when nothing was recorded).
    """

    path: Path
    model_name: str
    spec_name: str
    data_source: str
    indices: tuple[int, ...]
    scores: dict[str, np.ndarray]
    targets: dict[str, tuple[int, ...]]
    predictions: tuple[int, ...]
    labels: tuple[int, ...] | None
    grid: tuple[int, int] | None
    token_panels: TokenPanels | None = None
    decoder_scores: dict[str, np.ndarray] | None = None
    eval_run: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{method: {"scores": [[...]], "target": [...]}, ..., "indices": [...]}`` plus the
        predictions, labels, grid, the file written and the eval run recording it."""
        out: dict[str, Any] = {
            method: {"scores": self.scores[method].tolist(), "target": list(self.targets[method])}
            for method in self.scores
        }
        for method, found in (self.decoder_scores or {}).items():
            out[method]["decoder_scores"] = found.tolist()
        out["indices"] = list(self.indices)
        out["predictions"] = list(self.predictions)
        out["labels"] = None if self.labels is None else list(self.labels)
        out["grid"] = None if self.grid is None else list(self.grid)
        out["output"] = str(self.path)
        out["eval_run"] = self.eval_run
        return out


def explain_run(
    source: str,
    data_source: str | None,
    *,
    methods: Sequence[str] = ("generic",),
    indices: Sequence[int] | None = None,
    count: int | None = None,
    output: str | os.PathLike[str] | None = None,
    registry_url: str | None = None,
    target: int | None = None,
    record: bool = True,
) -> ExplainResult:
    """Explain MODEL or RUN ``source`` on samples of ``data_source`` with each of ``methods``
    and draw the maps to ``output`` (default ``explain.png``, or ``explain.html`` for token
    inputs). ``indices`` picks samples by row, else the first ``count`` (default 8). ``target``:
    the class (or next token) every sample is explained for; default each one's prediction.
    With a RUN and ``record``, the picture is recorded as an eval run (module docstring)."""
    methods = _check_methods(methods)
    if indices is not None and count is not None:
        raise ExplainRunError("give either --index or --count, not both")
    if count is not None and count < 1:
        raise ExplainRunError(f"--count is how many samples to explain: at least 1, not {count}")
    model, model_name, run = load_source(source, registry_url, "arch explain", ExplainRunError)
    config = dict(run.config or {}) if run is not None else {}
    images = image_input(model) is not None
    path = _check_path(output, images)
    data, rows, where = samples(model, source, data_source, run, ExplainRunError)
    picked = _pick(rows, indices, count, where)
    inputs = _inputs(model, data, picked)
    explained: dict[str, Explanation] = {
        method: explain(model, method, target, -1, 0, **inputs) for method in methods
    }
    first = explained[methods[0]]
    predictions = tuple(int(t) for t in first.target.tolist())  # targets default to them
    labels = _labels(data, picked)
    spec_name = model.spec.name or model.spec_hash[:12]
    scores = {m: e.scores.float().cpu().numpy() for m, e in explained.items()}
    decoder = {
        m: e.decoder_scores.float().cpu().numpy()
        for m, e in explained.items()
        if e.decoder_scores is not None
    }
    targets = {m: tuple(int(t) for t in e.target.tolist()) for m, e in explained.items()}
    title = f"{spec_name} · {model_name}\nrelevance on {where}"
    token_panels = None
    if images:
        found = image_input(model)
        assert found is not None
        pixels = inputs[found[0]]
        shown, grey = display_images(pixels)
        height, width = pixels.shape[-2:]
        maps = {m: e.upsample(height, width).float().cpu().numpy() for m, e in explained.items()}
        panels = HeatmapPanels(shown, grey, maps, targets, predictions, labels, tuple(rows[picked]))
        draw_heatmaps(panels, path, title)
    else:
        token_panels = _token_panels(
            model, data, config, inputs, scores, targets, predictions, labels, rows[picked]
        )
        if decoder:
            _, word = token_speller(model, config, data.text_vocab)
            token_panels = _with_target(model, token_panels, inputs, decoder, word)
        write_html(token_html(token_panels, title), path)
    result = ExplainResult(
        path=path,
        model_name=model_name,
        spec_name=spec_name,
        data_source=where,
        indices=tuple(int(i) for i in rows[picked]),
        scores=scores,
        targets=targets,
        predictions=predictions,
        labels=labels,
        grid=first.grid,
        token_panels=token_panels,
        decoder_scores=decoder or None,
    )
    if not record or run is None:
        return result
    settings = {
        "methods": methods,
        "indices": None if indices is None else list(indices),
        "count": count,
        "target": target,
        "split": "val" if data_source is None else "all",
    }
    eval_id = _record(model, run, registry_url, result, data, settings)
    return dataclasses.replace(result, eval_run=eval_id)


def _record(
    model: CompiledModel,
    run: Run,
    registry_url: str | None,
    result: ExplainResult,
    data: TaskData,
    settings: dict[str, Any],
) -> str:
    """Record ``result``'s picture as an ``eval`` run linked to training run ``run``, the
    picture attached as a ``relevance-map`` artifact. Returns its id."""
    from archlab.registry import Registry

    config = {
        "evaluates": run.id,
        "evaluation": "explain",
        **settings,
        "rows": list(result.indices),
        "data": data.source,
        "data_sha256": data.content_sha256,
        "examples": len(result.indices),
    }
    tags = {"evaluates": run.id, "evaluation": "explain"}
    with (
        Registry(registry_url, create=False) as registry,
        registry.start_run(model.spec, config, kind="eval", tags=tags) as handle,
    ):
        handle.log_artifact(result.path, "relevance-map", copy=True)
    return str(handle.id)


def _check_methods(methods: Sequence[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ExplainRunError(f"unknown method {unknown[0]!r}; choose among {', '.join(METHODS)}")
    chosen = list(dict.fromkeys(methods))
    if not chosen:
        raise ExplainRunError(f"name at least one method: {', '.join(METHODS)}")
    return chosen


def _check_path(output: str | os.PathLike[str] | None, images: bool) -> Path:
    """Where the picture goes: a .png/.svg/.pdf for images, an .html page for tokens."""
    if images:
        return check_output(output or "explain.png")[0]
    path = Path(output or "explain.html")
    if path.suffix.lower() not in HTML_SUFFIXES:
        raise ExplainRunError(
            f"this model reads tokens: its relevance is written as an HTML page; give -o a "
            f".html file, not {str(path)!r}"
        )
    if not path.parent.is_dir():
        raise ExplainRunError(f"the folder {str(path.parent)!r} does not exist (for -o {path})")
    return path


def _pick(
    rows: np.ndarray, indices: Sequence[int] | None, count: int | None, where: str
) -> np.ndarray:
    """Positions into ``rows``: the given ``indices`` or the first ``count``."""
    if len(rows) == 0:
        raise ExplainRunError(f"{where} has no samples to explain")
    if indices is None:
        return np.arange(min(count or DEFAULT_COUNT, len(rows)))
    bad = [i for i in indices if not 0 <= i < len(rows)]
    if bad:
        raise ExplainRunError(
            f"--index {bad[0]} lies outside {where}'s {len(rows)} samples (0..{len(rows) - 1})"
        )
    return np.asarray(list(indices), dtype=np.int64)


def _inputs(model: CompiledModel, data: TaskData, picked: np.ndarray) -> dict[str, torch.Tensor]:
    rows = torch.as_tensor(picked, dtype=torch.long)
    first = next(iter(model.parameters()), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return {
        k: (v[rows].to(dtype) if v.is_floating_point() else v[rows]) for k, v in data.inputs.items()
    }


def _labels(data: TaskData, picked: np.ndarray) -> tuple[int, ...] | None:
    """The true class per sample, or for a language model the next token after the last."""
    targets = data.targets[torch.as_tensor(picked, dtype=torch.long)]
    if data.task == "classify":
        return tuple(int(t) for t in targets.tolist())
    if data.task in ("lm", "seq2seq"):  # the explained next token: after the last
        return tuple(int(t) for t in targets[:, -1].tolist())
    return None


def _token_panels(
    model: CompiledModel,
    data: TaskData,
    config: dict[str, Any],
    inputs: dict[str, torch.Tensor],
    scores: dict[str, np.ndarray],
    targets: dict[str, tuple[int, ...]],
    predictions: tuple[int, ...],
    labels: tuple[int, ...] | None,
    rows: np.ndarray,
) -> TokenPanels:
    """The tokens as text (with the vocabulary the data or run recorded; ids otherwise)."""
    name, word = token_speller(model, config, data.text_vocab)
    lm = data.task in ("lm", "seq2seq")
    ids = inputs[name]
    tokens = tuple(tuple(word(int(i)) for i in row) for row in ids.tolist())
    said = {m: tuple(word(t) if lm else str(t) for t in ts) for m, ts in targets.items()}
    shown = tuple(word(p) if lm else str(p) for p in predictions)
    truth = None if labels is None else tuple(word(t) if lm else str(t) for t in labels)
    return TokenPanels(tokens, scores, said, shown, truth, tuple(int(i) for i in rows))


def _with_target(
    model: CompiledModel,
    panels: TokenPanels,
    inputs: dict[str, torch.Tensor],
    decoder: dict[str, np.ndarray],
    word: Callable[[int], str],
) -> TokenPanels:
    """An encoder-decoder's panels: each line the source tokens, an arrow, then the target
    tokens with their ``decoder_scores`` (each part coloured on its own scale)."""
    from archlab.specs.models import TokensInput

    names = [k for k, v in model.spec.inputs.items() if isinstance(v, TokensInput)]
    target = inputs[names[-1]].tolist()
    width = len(panels.tokens[0])
    tokens = tuple(
        (*row, "→ ", *(word(int(i)) for i in ids))
        for row, ids in zip(panels.tokens, target, strict=True)
    )
    scores = {
        m: np.concatenate([s, np.zeros((len(s), 1), dtype=s.dtype), decoder[m]], axis=1)
        for m, s in panels.scores.items()
    }
    return dataclasses.replace(panels, tokens=tokens, scores=scores, parts=(width, width + 1))


__all__ = ["DEFAULT_COUNT", "ExplainResult", "ExplainRunError", "explain_run"]
