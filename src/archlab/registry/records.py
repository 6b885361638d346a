"""Plain records the registry returns: no ORM row ever leaves ``archlab.registry``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

MIXUP_MODES = ("batch", "pair", "elem")


@dataclass(frozen=True)
class MixupSetting:
    """Mixup / CutMix settings with the semantics of timm's ``Mixup``.

    ``alpha`` is mixup's Beta parameter, ``cutmix_alpha`` CutMix's, ``cutmix_minmax`` an optional
    (min, max) box-size ratio range that replaces ``cutmix_alpha``; ``prob`` the chance a batch is
    mixed at all, ``switch_prob`` the chance of CutMix rather than mixup when both are on,
    ``mode`` per ``batch``, ``pair`` or ``elem``, ``label_smoothing`` applied to the mixed targets,
    ``off_epoch`` the epoch from which mixing stops (None: never).
    """

    alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    label_smoothing: float = 0.0
    off_epoch: int | None = None

    def __post_init__(self) -> None:
        problems = []
        for name in ("alpha", "cutmix_alpha", "label_smoothing"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a finite number >= 0, not {value!r}")
        for name in ("prob", "switch_prob"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                problems.append(f"{name} must be in [0, 1], not {value!r}")
        if self.mode not in MIXUP_MODES:
            problems.append(f"mode must be one of {', '.join(MIXUP_MODES)}, not {self.mode!r}")
        if self.cutmix_minmax is not None:
            pair = self.cutmix_minmax
            if not (
                isinstance(pair, tuple | list)
                and len(pair) == 2
                and all(isinstance(v, int | float) for v in pair)
                and 0 < pair[0] < pair[1] <= 1
            ):
                problems.append(
                    f"cutmix_minmax must be (min, max) with 0 < min < max <= 1, not {pair!r}"
                )
            else:
                object.__setattr__(self, "cutmix_minmax", (float(pair[0]), float(pair[1])))
        if self.off_epoch is not None and not (
            isinstance(self.off_epoch, int)
            and not isinstance(self.off_epoch, bool)
            and self.off_epoch >= 0
        ):
            problems.append(f"off_epoch must be an integer >= 0 or None, not {self.off_epoch!r}")
        if problems:
            raise ValueError("invalid mixup setting: " + "; ".join(problems))

    @property
    def active(self) -> bool:
        """Whether mixup or cutmix is applied at all (else the run records no mixup)."""
        return self.prob > 0 and (
            self.alpha > 0 or self.cutmix_alpha > 0 or self.cutmix_minmax is not None
        )

    @classmethod
    def from_any(cls, value: Any) -> MixupSetting:
        """From a MixupSetting, a dict, or any object with these attribute names."""
        if isinstance(value, MixupSetting):
            return value
        names = [f.name for f in fields(cls)]
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise ValueError(f"unknown mixup field(s) {unknown}; known: {', '.join(names)}")
            data = dict(value)
        else:
            data = {n: getattr(value, n) for n in names if hasattr(value, n)}
            if not data:
                raise ValueError(
                    f"not a mixup setting: {value!r} has none of the fields {', '.join(names)}"
                )
        minmax = data.get("cutmix_minmax")
        if minmax is not None and not isinstance(minmax, str | tuple):
            with contextlib.suppress(TypeError):  # a list or array: a pair; else refused below
                data["cutmix_minmax"] = tuple(minmax)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cutmix_minmax"] = list(self.cutmix_minmax) if self.cutmix_minmax else None
        return out


@dataclass(frozen=True)
class CVInfo:
    """Where a fold run sits in its cross-validation group."""

    group: str
    k: int
    fold: int | None
    n_train: int | None
    n_val: int | None
    train_sha256: str | None
    val_sha256: str | None


@dataclass(frozen=True)
class MetricSummary:
    """A metric of a run: its final value (at the last step), its best value (highest, or lowest
    for losses and errors) and the step of that, and how many steps were logged. NaN values count
    as steps and can be final, never best: ``best`` is NaN and ``best_step`` None while every
    value is NaN."""

    name: str
    final: float
    final_step: int
    best: float
    best_step: int | None
    count: int


@dataclass(frozen=True)
class Aggregate:
    """A metric's final values over the completed folds of a CV group (one run per fold):
    their mean, sample std (n - 1; None for a single fold, where it is undefined), n, min, max."""

    name: str
    mean: float
    std: float | None
    n: int
    min: float
    max: float


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the registry's artifact folder
    kind: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Run:
    """A run as the registry reports it."""

    id: str
    kind: str
    status: str
    spec_name: str | None
    spec_hash: str
    cv: CVInfo | None
    mixup: MixupSetting | None
    metrics: dict[str, float]  # final values
    started: float
    ended: float | None
    heartbeat: float
    error: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    summaries: dict[str, MetricSummary] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``id``, ``kind``, ``status``, ``spec_name``, ``spec_hash``, ``cv``, ``mixup``,
        ``metrics``, ``started``, ``ended`` and the rest."""
        out = asdict(self)
        out["mixup"] = self.mixup.to_dict() if self.mixup is not None else None
        return out


@dataclass(frozen=True)
class CVGroup:
    id: str
    spec_hash: str
    k: int
    splitter: str
    shuffle: bool
    seed: int | None
    stratified: bool
    grouped: bool
    repeats: int
    library: str | None
    config: dict[str, Any]
    runs: list[str] = field(default_factory=list)
    aggregates: dict[str, Aggregate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Ranked:
    """One entry of a ranking by a metric (``Registry.rank``): a run, ranked by its best value,
    or a CV group, ranked by the mean of its folds' final values (``aggregate``)."""

    metric: str
    value: float
    run: Run | None = None
    group: CVGroup | None = None

    @property
    def id(self) -> str:
        return self.group.id if self.group is not None else self.run.id  # type: ignore[union-attr]

    @property
    def aggregate(self) -> Aggregate | None:
        return self.group.aggregates.get(self.metric) if self.group is not None else None


@dataclass(frozen=True)
class Change:
    """One difference between two runs: ``path`` like ``spec.nodes.enc.depth`` or ``config.lr``."""

    path: str
    a: Any
    b: Any

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "a": self.a, "b": self.b}
