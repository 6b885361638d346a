"""The sweep file of ``arch sweep``: a base spec, a space of variants, objectives, budgets.

``load_sweep(path)`` reads and checks a JSON sweep file as strictly as a spec (unknown keys, wrong
types and paths that do not exist in the base spec are errors naming their JSON path:
``SweepError``, exit 2). ``Sweep.variant(point)`` applies a point of the space (``{"nodes.encoder
.depth": 2, "train.lr": 3e-4}``) to the base spec and training settings; ``check_budget`` measures
a variant's parameters and FLOPs from the spec alone (no torch, no weights) and says why it is
over budget, so an invalid or too large variant is rejected in milliseconds, never trained.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from archlab.compiler.cost import node_cost
from archlab.errors import ProblemsError, UserInputError
from archlab.runners.config import TrainConfig
from archlab.specs import SpecError, load_spec
from archlab.specs.analysis import analyze
from archlab.specs.errors import format_path
from archlab.specs.load import parse_json, validation_message
from archlab.specs.models import Spec


class SweepError(ProblemsError):
    """An invalid sweep file: every problem with its JSON path (the CLI exits 2)."""

    what = "sweep file"
    whole = "<sweep>"


Scalar = str | int | float | bool | None
#: Training settings a sweep decides itself: a trial is a whole CV group, labelled by the sweep.
NOT_SWEPT = ("fold", "cv_group", "name", "tags")
#: Objectives measured from the spec rather than the training.
SPEC_OBJECTIVES = ("params", "flops")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Range(_Strict):
    """One dimension of the space: exactly one of ``int: [low, high]`` (inclusive), ``float:
    [low, high]``, ``log: [low, high]`` (a float sampled on a log scale, low > 0) or ``choice:
    [v, ...]``; ``step`` spaces an ``int`` or ``float`` range."""

    int_: tuple[int, int] | None = Field(None, alias="int")
    float_: tuple[float, float] | None = Field(None, alias="float")
    log: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] | None = None
    choice: Annotated[list[Scalar], Field(min_length=1)] | None = None
    step: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _pairs(cls, data: Any) -> Any:
        if isinstance(data, dict):  # a JSON array is a list; strict pydantic takes tuples
            return {
                k: tuple(v) if k in ("int", "float", "log") and isinstance(v, list) else v
                for k, v in data.items()
            }
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> Range:
        given = [k for k in ("int", "float", "log", "choice") if self.bounds(k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of int, float, log or choice, not "
                + (" and ".join(given) or "none")
            )
        kind = given[0]
        pair = self.bounds(kind)
        if kind != "choice" and isinstance(pair, tuple) and not pair[0] <= pair[1]:
            raise ValueError(f"{kind}: the range [{pair[0]}, {pair[1]}] must have low <= high")
        if self.step is not None and kind not in ("int", "float"):
            raise ValueError(f"step spaces an int or float range, not a {kind} range")
        if self.step is not None and kind == "int" and self.step != int(self.step):
            raise ValueError(f"an int range takes a whole step, not {self.step}")
        return self

    def bounds(self, kind: str) -> Any:
        return {"int": self.int_, "float": self.float_, "log": self.log, "choice": self.choice}[
            kind
        ]

    @property
    def kind(self) -> str:
        return next(k for k in ("int", "float", "log", "choice") if self.bounds(k) is not None)

    def values(self) -> list[Any]:
        """The values checked at load time: both ends of a range, every choice."""
        bounds = self.bounds(self.kind)
        return list(bounds)


class Budget(_Strict):
    """Limits a variant must keep, measured from the spec alone (``arch compile``'s counts)."""

    max_params: Annotated[int, Field(ge=1)] | None = None
    max_flops: Annotated[int, Field(ge=1)] | None = None
    """Forward FLOPs per sample (a multiply-add counts 2)."""


class SweepModel(_Strict):
    """The JSON document of a sweep file."""

    base: Annotated[str, Field(min_length=1)]
    """The spec the variants start from; a relative path is read from the sweep file's folder."""
    space: Annotated[dict[str, Range], Field(min_length=1)]
    """Spec JSON paths (``nodes.encoder.depth``) and training settings (``train.lr``)."""
    objectives: Annotated[dict[str, Literal["max", "min"]], Field(min_length=1)] = {
        "val_acc": "max"
    }
    """Metrics to maximise or minimise (the mean over folds of their final values), or the
    spec's ``params`` / ``flops``; several give a Pareto front."""
    budget: Budget = Budget()
    train: dict[str, Any] = {}
    """The training and cross-validation settings of every trial (``arch train``'s config)."""
    trials: Annotated[int, Field(ge=1)]
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    """The study's name; left out, the sweep file's name without ``.json``."""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    """Seeds the sampler (TPE)."""
    pruner: Literal["median", "none"] | None = None
    """``median``: stop a trial after a fold whose running mean is worse than the median of the
    earlier trials at that fold (single objective only); left out, ``median`` for one objective
    and ``none`` for several."""


@dataclass(frozen=True)
class Variant:
    """A point of the space applied: the spec document and the training configuration."""

    point: dict[str, Any]
    spec: dict[str, Any]
    train: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file: its document, the base spec (a JSON dict) and where it came from."""

    model: SweepModel
    base_spec: dict[str, Any]
    source: str
    name: str

    def variant(self, point: dict[str, Any]) -> Variant:
        """The base spec and training settings with ``point`` (path -> value) laid over them.
        Raises ``UserInputError`` naming a spec path that does not exist."""
        spec = copy.deepcopy(self.base_spec)
        train = dict(self.model.train)
        for path, value in point.items():
            if path.startswith("train."):
                train[path.removeprefix("train.")] = value
            else:
                set_path(spec, path, value)
        return Variant(dict(point), spec, train)

    def config(self, variant: Variant, tags: dict[str, str]) -> TrainConfig:
        """The training configuration of a trial, labelled with ``tags``."""
        return TrainConfig.model_validate({**variant.train, "tags": tags})


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` (``nodes.encoder.block.attention.heads``) in ``doc``: every part but the last
    must exist (a list takes an index); the last may be a key the spec leaves at its default."""
    parts = path.split(".")
    here: Any = doc
    for i, part in enumerate(parts[:-1]):
        here = _step(here, part, ".".join(parts[: i + 1]))
    last = parts[-1]
    if isinstance(here, list):
        _step(here, last, path)
        here[int(last)] = value
    elif isinstance(here, dict):
        here[last] = value
    else:
        raise UserInputError(f"{path}: {'.'.join(parts[:-1])} is not an object in the base spec")


def _step(here: Any, part: str, so_far: str) -> Any:
    if isinstance(here, dict) and part in here:
        return here[part]
    if isinstance(here, list) and part.isdigit() and int(part) < len(here):
        return here[int(part)]
    raise UserInputError(f"{so_far} does not exist in the base spec")


def check_budget(spec: Spec, budget: Budget) -> tuple[int, int, str | None]:
    """``(params, flops, reason)``: the spec's parameters and forward FLOPs per sample, from its
    analysed graph alone, and why it is over ``budget`` (None: within it)."""
    graph = analyze(spec)
    costs = [node_cost(graph, n) for n in graph.expanded.nodes]
    params = sum(c.params for c in costs)
    flops = sum(c.flops for c in costs)
    if budget.max_params is not None and params > budget.max_params:
        return params, flops, f"{params:,} parameters > max_params {budget.max_params:,}"
    if budget.max_flops is not None and flops > budget.max_flops:
        return params, flops, f"{flops:,} FLOPs > max_flops {budget.max_flops:,}"
    return params, flops, None


def load_sweep(path: str | Path) -> Sweep:
    """The sweep file at ``path``, checked: its shape, its base spec, every range's ends applied
    to the base (paths must exist) and the training settings. Raises ``SweepError``."""
    path = Path(path)
    source = str(path)
    try:
        data = parse_json(path.read_text(encoding="utf-8"), source)
    except SpecError as exc:
        raise SweepError(exc.errors, source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError([("", f"cannot read {path}: {exc}")], source) from None
    if not isinstance(data, dict):
        raise SweepError(
            [("", f"a sweep file is a JSON object, not {type(data).__name__}")], source
        )
    try:
        model = SweepModel.model_validate(data)
    except ValidationError as exc:
        problems = [
            (format_path(tuple(e["loc"])), validation_message(e, tuple(e["loc"]), SweepModel))
            for e in exc.errors()
        ]
        raise SweepError(problems, source) from None
    base_path = Path(model.base) if Path(model.base).is_absolute() else path.parent / model.base
    try:
        base = json.loads(base_path.read_text(encoding="utf-8"))
        load_spec(base)
    except (OSError, ValueError) as exc:
        raise SweepError(
            [("base", f"cannot load the base spec {base_path}: {exc}")], source
        ) from None
    sweep = Sweep(model, base, source, model.name or path.name.removesuffix(".json"))
    problems = _check_space(sweep)
    if problems:
        raise SweepError(problems, source)
    return sweep


def _check_space(sweep: Sweep) -> list[tuple[str, str]]:
    """Problems with the space, objectives and training settings, each under its path."""
    problems: list[tuple[str, str]] = []
    fields = TrainConfig.model_fields
    for key, rng in sweep.model.space.items():
        where = f"space.{key}"
        if key.startswith("train."):
            name = key.removeprefix("train.")
            if name not in fields or name in NOT_SWEPT:
                problems.append((where, f"{name!r} is not a training setting a sweep can vary"))
            continue
        try:
            for value in rng.values():
                sweep.variant({key: value})
        except UserInputError as exc:
            problems.append((where, str(exc)))
    for name in sweep.model.train:
        if name in NOT_SWEPT:
            problems.append((f"train.{name}", f"a sweep sets {name} itself; leave it out"))
    try:
        config = TrainConfig.model_validate(
            {k: v for k, v in sweep.model.train.items() if k not in NOT_SWEPT}
        )
    except ValidationError as exc:
        for e in exc.errors():
            loc = ("train", *e["loc"])
            problems.append((format_path(loc), validation_message(e, tuple(e["loc"]), TrainConfig)))
    else:
        if config.folds is None:
            problems.append(("train.folds", "a trial is a CV group: set folds (2 or more)"))
    problems += _check_objectives(sweep)
    several = len(sweep.model.objectives) > 1
    if several and sweep.model.pruner == "median":
        problems.append(("pruner", 'a pruner stops single-objective trials only: use "none"'))
    return problems


def _check_objectives(sweep: Sweep) -> list[tuple[str, str]]:
    """An objective must be a metric every epoch of the base spec's training logs (its final
    value is what a fold reports), or the spec's ``params`` / ``flops``."""
    from archlab.runners.data.task import task_of
    from archlab.runners.pruning import spec_has_dynamic
    from archlab.runners.trainer import epoch_metrics

    spec = load_spec(sweep.base_spec)
    known = (*epoch_metrics(task_of(spec), dynamic=spec_has_dynamic(spec)), *SPEC_OBJECTIVES)
    problems = []
    for name in sweep.model.objectives:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append((f"objectives.{name}", f"{hint}a trial measures {', '.join(known)}"))
    return problems


__all__ = [
    "SPEC_OBJECTIVES",
    "Budget",
    "Range",
    "Sweep",
    "SweepError",
    "SweepModel",
    "Variant",
    "check_budget",
    "load_sweep",
    "set_path",
]
