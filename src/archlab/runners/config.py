"""The training configuration of ``arch train``: one strict, frozen ``TrainConfig``.

A configuration comes from an optional JSON file with command-line flags laid over it
(``load_train_config``). It is as strict as a spec: unknown keys are errors with a did-you-mean,
values must already have their type (``"lr": "0.1"`` is refused rather than read as a number), and
every problem, cross-field ones included, is reported at once under the name of its field
(``ConfigError``). ``TrainConfig.to_record()`` is the resolved configuration the registry stores
with each run; ``TrainConfig(**record)`` gives the same configuration back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from archlab.errors import ProblemsError
from archlab.registry.records import MixupSetting
from archlab.specs.errors import SpecError, format_path
from archlab.specs.load import parse_json, validation_message


class ConfigError(ProblemsError):
    """An invalid training configuration (the CLI exits 2 with the message).

    ``errors`` lists every problem as ``(field, message)`` pairs (``""`` for the whole file);
    ``source`` names the file the configuration came from, when there is one.
    """

    what = "training configuration"
    whole = "<config>"


def _pair(value: Any) -> Any:
    """A JSON array (a list) -> a tuple, as strict validation takes only tuples for a pair; one
    of the wrong length is refused here, where the message can say what a pair is."""
    if isinstance(value, list | tuple) and len(value) != 2:
        raise ValueError(f"expected a pair [min, max], not {len(value)} value(s): {list(value)}")
    return tuple(value) if isinstance(value, list) else value


#: scikit-learn and numpy's legacy generators take seeds below 2**32.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Name = Annotated[str, Field(min_length=1)]
Pair = Annotated[tuple[float, float], BeforeValidator(_pair)]


class TrainConfig(BaseModel):
    """Everything ``arch train`` needs besides the spec: optimisation, splits, mixup, runtime.

    Cross-field rules are checked by the validators of the later field, so each error names the
    field to change: ``warmup`` must be shorter than ``epochs``, ``fold`` and ``repeats > 1`` need
    ``folds``, ``cv_group`` needs ``fold``, and so on.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        allow_inf_nan=False,
        validate_default=True,  # the cross-field checks must also see defaulted fields
        use_attribute_docstrings=True,
    )

    # ---- optimisation
    data: Name = "digits"
    """The data set to train on, as the data sources name it."""
    epochs: Annotated[int, Field(ge=1)] = 30
    batch_size: Annotated[int, Field(ge=1)] = 64
    lr: Positive = 1e-3
    """Peak learning rate, reached at the end of the warm-up."""
    weight_decay: NonNegative = 0.05
    warmup: NonNegative = 2.0
    """Epochs of linear warm-up (fractions allowed); shorter than ``epochs``. Left out, 2 epochs,
    or a tenth of the training when that is shorter (so ``--epochs 1`` just works)."""
    min_lr: NonNegative = 1e-5
    """The learning rate the schedule decays to; at most ``lr``."""
    seed: Seed = 0
    """Seeds initialisation, data order and augmentation."""
    grad_clip: Positive | None = 1.0
    """Clip the gradient norm to this value; null: no clipping."""
    accumulate: Annotated[int, Field(ge=1)] = 1
    """Gradient accumulation: micro-batches per optimiser step."""

    # ---- cross-validation
    folds: Annotated[int, Field(ge=2)] | None = None
    """K for K-fold cross-validation; null: a single hold-out split of ``val_size``."""
    repeats: Annotated[int, Field(ge=1)] = 1
    """Repeat the K-fold split this many times with fresh partitions (needs ``folds``)."""
    cv_seed: Seed = 0
    """Seeds the splits, so they stay the same while ``seed`` varies."""
    val_size: Fraction = 0.2
    """Fraction of all examples held out for validation when there are no folds."""
    test_size: Fraction | None = None
    """Fraction of all examples held out first as a test set every fold model is evaluated on."""
    fold: Annotated[int, Field(ge=0)] | None = None
    """Train only this fold (0-based over all ``folds * repeats``)."""
    cv_group: Name | None = None
    """Record the fold in this existing CV group (needs ``fold``)."""
    fold_seeds: bool = False
    """False: every fold starts from the same initialisation (``seed``); True: ``seed + fold``."""

    # ---- mixup / CutMix (timm's semantics; the registry's MixupSetting)
    mixup: NonNegative = 0.0
    """Mixup's Beta alpha; 0: off."""
    cutmix: NonNegative = 0.0
    """CutMix's Beta alpha; 0: off."""
    cutmix_minmax: Pair | None = None
    """(min, max) box-size ratio range for CutMix, used instead of ``cutmix``."""
    mix_prob: Probability = 1.0
    """Chance a batch is mixed at all."""
    switch_prob: Probability = 0.5
    """Chance of CutMix rather than mixup when both are on."""
    mix_mode: Literal["batch", "pair", "elem"] = "batch"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    mixup_off_epoch: Annotated[int, Field(ge=0)] | None = None
    """Mix during the first N epochs only (epochs 1..N, counted from 1 as everywhere); null:
    never stop."""

    # ---- early stopping
    early_stop_metric: Name | None = None
    """Stop when this metric (e.g. ``val_loss``, ``val_acc``) has not improved for ``patience``
    epochs; null: train all epochs."""
    patience: Annotated[int, Field(ge=1)] = 10

    # ---- runtime
    device: str = "auto"
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    compile: bool = False
    """Train through ``torch.compile``."""
    amp: Literal["auto", "bf16", "off"] = "auto"
    """``auto``: bf16 autocast on CUDA, float32 elsewhere; ``bf16``: autocast on any device."""
    workers: Annotated[int, Field(ge=0)] = 0
    """Data-loading worker processes."""

    # ---- starting weights
    init: Name | None = None
    """Start from these weights (``--init``): a .safetensors file archlab wrote, or a registry
    run's last checkpoint; matched by name and shape, heads and pruning stages may start fresh
    (``runners/init.py``). Null: the spec's own initialisation from ``seed``."""

    # ---- token pruning: DynamicViT's objectives (specs with dynamic stages), EViT's warm-up
    ratio_weight: NonNegative = 2.0
    """Weight of the keep-ratio loss."""
    distill_weight: NonNegative = 0.5
    """Weight of the distillation loss on the teacher's logits."""
    token_distill_weight: NonNegative = 0.5
    """Weight of the distillation loss on the kept tokens."""
    teacher: Name | None = None
    """The dense teacher: a registry run, a CV group whose fold i teaches fold i, or a weights
    file (``arch import``, ``arch compile -o``: a pretrained model, which saw none of this
    split). Null: train the spec without its pruning stages first (from ``init`` if given) and
    use that. The student starts from its weights."""
    keep_warmup: Annotated[int, Field(ge=0)] = 0
    """EViT's warm-up: epochs at keep 1.0 before ``attention_topk`` stages start dropping."""
    keep_ramp: Annotated[int, Field(ge=0)] = 0
    """Epochs of a cosine from keep 1.0 down to each ``attention_topk`` stage's keep."""

    # ---- labels (recorded, never used by the training itself)
    name: Name | None = None
    """A name for the runs (recorded as the tag ``name`` on every run, and with a CV group)."""
    tags: dict[Annotated[str, Field(min_length=1, max_length=100)], str] = {}
    """Tags recorded on every run of the training (``--tag key=value``)."""

    # ---------------------------------------------------------------- cross-field checks

    @model_validator(mode="before")
    @classmethod
    def _default_warmup(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("warmup") is None:
            epochs = data.get("epochs", cls.model_fields["epochs"].default)
            if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1:
                return {**data, "warmup": min(2.0, epochs / 10)}
        return data

    @field_validator("warmup")
    @classmethod
    def _warmup_within_training(cls, warmup: float, info: ValidationInfo) -> float:
        epochs = info.data.get("epochs")
        if epochs is not None and warmup >= epochs:
            raise ValueError(
                f"a warm-up of {warmup:g} epochs must be shorter than the {epochs} epochs of "
                "training; lower warmup or raise epochs"
            )
        return warmup

    @field_validator("device")
    @classmethod
    def _device_spelling(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", device):
            raise ValueError(
                f"{json.dumps(device)} is not one of 'auto', 'cpu', 'cuda' or 'cuda:N' (N: the "
                "GPU's index, from 0)"
            )
        return device

    @field_validator("min_lr")
    @classmethod
    def _min_lr_below_lr(cls, min_lr: float, info: ValidationInfo) -> float:
        lr = info.data.get("lr")
        if lr is not None and min_lr > lr:
            raise ValueError(
                f"min_lr {min_lr:g} is above lr {lr:g}; the schedule decays from lr to min_lr"
            )
        return min_lr

    @field_validator("repeats")
    @classmethod
    def _repeats_need_folds(cls, repeats: int, info: ValidationInfo) -> int:
        problem = repeats_problem(None, repeats) if _given_as_none(info, "folds") else None
        if problem:
            raise ValueError(problem)
        return repeats

    @field_validator("test_size")
    @classmethod
    def _hold_out_leaves_training_data(
        cls, test_size: float | None, info: ValidationInfo
    ) -> float | None:
        val_size = info.data.get("val_size")
        if val_size is not None and _given_as_none(info, "folds"):
            problem = held_out_problem(None, val_size, test_size)
            if problem:
                raise ValueError(problem)
        return test_size

    @field_validator("fold")
    @classmethod
    def _fold_in_range(cls, fold: int | None, info: ValidationInfo) -> int | None:
        if fold is None or "folds" not in info.data:
            return fold
        folds = info.data["folds"]
        if folds is None:
            raise ValueError(f"fold={fold} picks one fold of a K-fold split; set folds too")
        repeats = info.data.get("repeats")
        if repeats is not None and fold >= folds * repeats:
            raise ValueError(
                f"fold={fold} is out of range: folds={folds} x repeats={repeats} gives folds "
                f"0-{folds * repeats - 1}"
            )
        return fold

    @field_validator("cv_group")
    @classmethod
    def _cv_group_needs_fold(cls, cv_group: str | None, info: ValidationInfo) -> str | None:
        if cv_group is not None and _given_as_none(info, "fold"):
            raise ValueError(
                f"joining CV group {cv_group!r} runs one of its folds; say which with fold"
            )
        return cv_group

    @field_validator("cutmix_minmax")
    @classmethod
    def _minmax_ordered(cls, pair: tuple[float, float] | None) -> tuple[float, float] | None:
        if pair is not None and not 0 < pair[0] < pair[1] <= 1:
            raise ValueError(
                f"cutmix_minmax must be (min, max) with 0 < min < max <= 1, not {list(pair)}"
            )
        return pair

    # ------------------------------------------------------------------------------ views

    def mixup_setting(self) -> MixupSetting | None:
        """The mixup / CutMix setting to apply and record, or None when no batch is ever mixed
        (neither mixup nor CutMix is on, or ``mix_prob`` is 0). ``label_smoothing`` is part of
        the setting; without one, the training loop applies it to the plain targets."""
        setting = MixupSetting(
            alpha=self.mixup,
            cutmix_alpha=self.cutmix,
            cutmix_minmax=self.cutmix_minmax,
            prob=self.mix_prob,
            switch_prob=self.switch_prob,
            mode=self.mix_mode,
            label_smoothing=self.label_smoothing,
            off_epoch=self.mixup_off_epoch,
        )
        return setting if setting.active else None

    def to_record(self) -> dict[str, Any]:
        """Every field, defaults included, as plain JSON values: what the registry stores."""
        return self.model_dump(mode="json")


#: The recorded settings that cannot change what a training computes: where and how fast it
#: runs, and its labels. A fold joining a CV group (``--cv-group G --fold i``) may differ from
#: the group in these alone; every other setting must be the group's. (``fold`` and
#: ``cv_group`` say where the fold goes; ``device_name`` and ``dtype`` follow the device;
#: ``determinism``, torch's determinism flags, can change the last bits, not what is learnt.)
RESULT_NEUTRAL = frozenset(
    {
        "device",
        "device_name",
        "dtype",
        "compile",
        "workers",
        "threads",
        "determinism",
        "name",
        "tags",
        "fold",
        "cv_group",
    }
)


def repeats_problem(folds: int | None, repeats: int) -> str | None:
    """What is wrong with repeating a split ``repeats`` times with ``folds`` (None: a hold-out
    split), or None. The one wording of this rule, for a config and for ``make_splits``."""
    if folds is None and repeats > 1:
        return f"repeats={repeats} repeats a K-fold split; set folds too"
    return None


def held_out_problem(folds: int | None, val_size: float, test_size: float | None) -> str | None:
    """What is wrong with holding out ``test_size`` and ``val_size`` of the data (a hold-out
    split: ``folds`` None), or None: something must be left to train on."""
    if folds is None and test_size is not None and test_size + val_size >= 1:
        return (
            f"test_size={test_size:g} and val_size={val_size:g} add up to "
            f"{test_size + val_size:g}, leaving nothing to train on; they must sum below 1"
        )
    return None


def _given_as_none(info: ValidationInfo, name: str) -> bool:
    """Whether an earlier field validated to None (a field that failed is absent: no verdict)."""
    return name in info.data and info.data[name] is None


# --------------------------------------------------------------------------------------- loading


def load_train_config(path: str | Path | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """The configuration in the JSON file at ``path`` (None: all defaults) with ``overrides``
    laid over it, validated once.

    ``overrides`` are the command-line values by field name; a None value means the flag was
    not given and leaves the file's value (so a flag cannot set a field to null). Raises
    ``ConfigError`` listing every problem under its field's name.
    """
    source = str(path) if path is not None else None
    data = _read(Path(path)) if path is not None else {}
    given = {key: value for key, value in overrides.items() if value is not None}
    data.update(given)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            message = validation_message(err, loc, TrainConfig)
            if loc and loc[0] in given:
                message += " (from the command line)"
            problems.append((format_path(loc), message))
        raise ConfigError(problems, source) from None


def _read(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; JSON errors carry line and column, duplicate keys refused."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", f"no such file: {path}")], source) from None
    except IsADirectoryError:
        raise ConfigError([("", f"{path} is a directory, not a JSON file")], source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"cannot read {path}: {exc}")], source) from None
    try:
        data = parse_json(text, source)
    except SpecError as exc:  # the spec loader's JSON reader; its errors are file-level
        raise ConfigError(exc.errors, source) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [("", f"a training configuration is a JSON object, not {type(data).__name__}")],
            source,
        )
    return data
