"""``TrainConfig`` and ``load_train_config``: defaults, file + flags, strictness, errors, records."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from archlab.errors import UserInputError
from archlab.registry.records import MixupSetting
from archlab.runners.config import ConfigError, TrainConfig, load_train_config


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "train.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def config_error(path: Path | None, overrides: dict[str, Any], field: str, pattern: str) -> None:
    """Loading must fail with a ConfigError whose problem at ``field`` matches ``pattern``."""
    with pytest.raises(ConfigError) as info:
        load_train_config(path, overrides)
    messages = [message for where, message in info.value.errors if where == field]
    assert messages, f"no problem at {field!r} in {info.value.errors}"
    assert any(re.search(pattern, m) for m in messages), messages
    assert isinstance(info.value, UserInputError)  # the CLI exits 2 with the message
    assert f"  {field or '<config>'}: " in str(info.value)


def test_defaults() -> None:
    config = load_train_config(None, {})
    assert config == TrainConfig()
    assert (config.data, config.epochs, config.batch_size, config.lr) == ("digits", 30, 64, 1e-3)
    assert (config.weight_decay, config.warmup, config.min_lr) == (0.05, 2.0, 1e-5)
    assert (config.seed, config.grad_clip, config.accumulate) == (0, 1.0, 1)
    assert (config.folds, config.repeats, config.cv_seed, config.val_size) == (None, 1, 0, 0.2)
    assert (config.test_size, config.fold, config.cv_group, config.fold_seeds) == (
        None,
        None,
        None,
        False,
    )
    assert (config.mixup, config.cutmix, config.cutmix_minmax) == (0.0, 0.0, None)
    assert (config.mix_prob, config.switch_prob, config.mix_mode) == (1.0, 0.5, "batch")
    assert (config.label_smoothing, config.mixup_off_epoch) == (0.0, None)
    assert (config.early_stop_metric, config.patience) == (None, 10)
    assert (config.device, config.compile, config.amp, config.workers) == ("auto", False, "auto", 0)
    assert (config.ratio_weight, config.distill_weight, config.token_distill_weight) == (
        2.0,
        0.5,
        0.5,
    )
    assert config.teacher is None


def test_flags_override_the_file_and_none_means_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, {"epochs": 12, "lr": 0.01, "folds": 5, "mixup": 0.2, "seed": 4})
    config = load_train_config(path, {"lr": 3e-4, "seed": None, "fold": 2, "batch_size": None})
    assert (config.epochs, config.lr, config.folds, config.mixup) == (12, 3e-4, 5, 0.2)
    assert (config.seed, config.fold, config.batch_size) == (4, 2, 64)
    assert load_train_config(str(path), {}).lr == 0.01  # a str path works too


def test_a_json_array_and_a_flag_pair_both_give_a_tuple(tmp_path: Path) -> None:
    path = write(tmp_path, {"cutmix_minmax": [0.3, 0.8]})
    assert load_train_config(path, {}).cutmix_minmax == (0.3, 0.8)
    assert load_train_config(None, {"cutmix_minmax": [0.2, 1]}).cutmix_minmax == (0.2, 1.0)


def test_the_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        TrainConfig().lr = 0.1  # type: ignore[misc]


# ------------------------------------------------------------------------------- strictness


def test_unknown_keys_get_a_did_you_mean(tmp_path: Path) -> None:
    config_error(
        write(tmp_path, {"epoch": 3}), {}, "epoch", r"unknown key 'epoch'; did you mean 'epochs'\?"
    )
    config_error(
        None, {"learning_rate": 1.0}, "learning_rate", r"unknown key.*\(from the command line\)"
    )


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("lr", "0.1", r'valid number \(got "0.1"\)'),  # no string-to-number coercion
        ("epochs", 3.0, r"valid integer \(got 3.0\)"),
        ("epochs", True, r"valid integer"),
        ("fold_seeds", 1, r"valid boolean"),
        ("data", 5, r"valid string"),
        ("mix_mode", "row", r'"row" is not one of'),
        ("device", "gpu", r'"gpu" is not one of'),
        ("amp", "fp16", r'"fp16" is not one of'),
        ("cutmix_minmax", [0.2], r"expected a pair \[min, max\], not 1 value\(s\): \[0.2\]"),
        ("cutmix_minmax", [0.2, 0.5, 0.9], r"not 3 value"),
        ("epochs", 0, r"greater than or equal to 1"),
        ("lr", 0.0, r"greater than 0"),
        ("grad_clip", -1.0, r"greater than 0"),
        ("folds", 1, r"greater than or equal to 2"),
        ("val_size", 1.0, r"less than 1"),
        ("mix_prob", 1.5, r"less than or equal to 1"),
        ("seed", -1, r"greater than or equal to 0"),
        ("cv_seed", 2**32, r"less than or equal to 4294967295"),
        ("label_smoothing", 1.0, r"less than 1"),
    ],
)
def test_wrong_types_and_ranges_are_refused(
    tmp_path: Path, field: str, value: Any, pattern: str
) -> None:
    config_error(write(tmp_path, {field: value}), {}, field, pattern)


def test_a_bad_element_of_a_pair_is_named_by_its_dotted_path(tmp_path: Path) -> None:
    config_error(
        write(tmp_path, {"cutmix_minmax": [0.2, "0.5"]}), {}, "cutmix_minmax.1", r"valid number"
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, {"lr": "0.1", "epochs": 0, "mix_modes": "pair"})
    with pytest.raises(ConfigError) as info:
        load_train_config(path, {"batch_size": 0})
    assert [field for field, _ in info.value.errors] == ["epochs", "batch_size", "lr", "mix_modes"]
    text = str(info.value)
    assert text.startswith(f"{path}: invalid training configuration (4 problems)")
    assert (
        "batch_size: input should be greater than or equal to 1 (got 0) (from the command line)"
        in text
    )


# --------------------------------------------------------------------------------- cross-field


@pytest.mark.parametrize(
    ("values", "field", "pattern"),
    [
        ({"epochs": 2, "warmup": 2.0}, "warmup", r"warm-up of 2 epochs must be shorter than"),
        ({"lr": 1e-4, "min_lr": 1e-3}, "min_lr", r"min_lr 0.001 is above lr 0.0001"),
        ({"fold": 0}, "fold", r"fold=0 picks one fold of a K-fold split; set folds too"),
        ({"folds": 5, "fold": 5}, "fold", r"folds=5 x repeats=1 gives folds 0-4"),
        ({"folds": 3, "repeats": 2, "fold": 6}, "fold", r"gives folds 0-5"),
        ({"repeats": 3}, "repeats", r"repeats=3 repeats a K-fold split; set folds too"),
        ({"folds": 3, "cv_group": "abc"}, "cv_group", r"CV group 'abc'.*say which with fold"),
        ({"test_size": 0.3, "val_size": 0.7}, "test_size", r"add up to 1, leaving nothing"),
        ({"cutmix_minmax": [0.8, 0.2]}, "cutmix_minmax", r"0 < min < max <= 1, not \[0.8, 0.2\]"),
        ({"cutmix_minmax": [0.0, 0.5]}, "cutmix_minmax", r"0 < min < max <= 1"),
    ],
)
def test_cross_field_errors_name_the_field_to_change(
    tmp_path: Path, values: dict[str, Any], field: str, pattern: str
) -> None:
    config_error(write(tmp_path, values), {}, field, pattern)


def test_cross_field_rules_that_hold() -> None:
    ok = load_train_config(None, {"folds": 3, "repeats": 2, "fold": 5, "cv_group": "g1"})
    assert (ok.fold, ok.cv_group) == (5, "g1")
    # with folds, val_size is unused, so test_size + val_size may reach 1
    assert load_train_config(None, {"folds": 3, "test_size": 0.5, "val_size": 0.5}).folds == 3


def test_a_bad_field_does_not_cause_follow_on_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(None, {"folds": 1, "fold": 0, "epochs": 0})
    assert [field for field, _ in info.value.errors] == ["epochs", "folds"]


# ------------------------------------------------------------------------------- the file


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('{"epochs": 3,\n  "lr": }', r"invalid JSON at line 2, column 9"),
        ('{"epochs": 3, "epochs": 4}', r"key 'epochs' appears twice"),
        ('{"lr": NaN}', r"NaN is not a JSON number"),
        ("[1, 2]", r"a training configuration is a JSON object, not list"),
    ],
)
def test_bad_json_files(tmp_path: Path, text: str, pattern: str) -> None:
    config_error(write(tmp_path, text), {}, "", pattern)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    config_error(tmp_path / "nope.json", {}, "", r"no such file: .*nope.json")
    config_error(tmp_path, {}, "", r"is a directory")


# ------------------------------------------------------------------------- mixup and records


def test_mixup_setting_is_none_unless_something_mixes() -> None:
    assert TrainConfig().mixup_setting() is None
    assert TrainConfig(label_smoothing=0.1).mixup_setting() is None
    assert TrainConfig(mixup=0.8, mix_prob=0.0).mixup_setting() is None


def test_mixup_setting_maps_every_field() -> None:
    config = TrainConfig(
        mixup=0.8,
        cutmix=1.0,
        cutmix_minmax=(0.2, 0.9),
        mix_prob=0.7,
        switch_prob=0.4,
        mix_mode="pair",
        label_smoothing=0.1,
        mixup_off_epoch=25,
    )
    assert config.mixup_setting() == MixupSetting(
        alpha=0.8,
        cutmix_alpha=1.0,
        cutmix_minmax=(0.2, 0.9),
        prob=0.7,
        switch_prob=0.4,
        mode="pair",
        label_smoothing=0.1,
        off_epoch=25,
    )
    cutmix_only = TrainConfig(cutmix_minmax=(0.3, 0.6)).mixup_setting()
    assert cutmix_only is not None and cutmix_only.cutmix_minmax == (0.3, 0.6)


def test_to_record_is_plain_json_and_round_trips() -> None:
    config = TrainConfig(
        folds=5, fold=1, cutmix_minmax=(0.2, 0.9), grad_clip=None, teacher="t.safetensors"
    )
    record = config.to_record()
    assert json.loads(json.dumps(record)) == record
    assert set(record) == set(TrainConfig.model_fields)
    assert record["cutmix_minmax"] == [0.2, 0.9] and record["grad_clip"] is None
    assert TrainConfig(**record) == config
    assert TrainConfig(**TrainConfig().to_record()) == TrainConfig()


def test_the_default_warm_up_fits_short_trainings() -> None:
    assert TrainConfig().warmup == 2.0  # 30 epochs: 2 epochs of warm-up
    assert TrainConfig(epochs=1).warmup == pytest.approx(0.1)  # a tenth when that is shorter
    assert TrainConfig(epochs=5).warmup == pytest.approx(0.5)
    assert load_train_config(None, {"epochs": 2}).warmup == pytest.approx(0.2)
    assert TrainConfig(epochs=3, warmup=1.0).warmup == 1.0  # an explicit value is kept


def test_config_errors_render_as_spec_errors_do() -> None:
    """One rendering for both: duplicates once, text from the file with visible escapes."""
    from archlab.specs.errors import SpecError

    problems = [("lr", "must be > 0\x1b[2J"), ("lr", "must be > 0\x1b[2J"), ("", "not JSON")]
    config = str(ConfigError(problems, "train\x1b.json"))
    spec = str(SpecError(problems, "train\x1b.json"))
    assert config == spec.replace("invalid spec", "invalid training configuration").replace(
        "<spec>", "<config>"
    )
    assert "\x1b" not in config and config.count("must be > 0") == 1
    assert config.splitlines()[0].endswith("invalid training configuration (2 problems)")


def test_split_rules_have_one_wording_for_configs_and_make_splits() -> None:
    from archlab.runners.config import held_out_problem, repeats_problem
    from archlab.runners.splits import SplitError, make_splits

    assert repeats_problem(5, 3) is None and repeats_problem(None, 1) is None
    wording = repeats_problem(None, 3)
    assert wording == "repeats=3 repeats a K-fold split; set folds too"
    with pytest.raises(SplitError) as info:
        make_splits(20, folds=None, repeats=3)
    assert str(info.value) == wording
    assert held_out_problem(5, 0.5, 0.5) is None and held_out_problem(None, 0.2, None) is None
    assert held_out_problem(None, 0.2, 0.3) is None
    summed = held_out_problem(None, 0.7, 0.3)
    assert summed is not None and summed.startswith("test_size=0.3 and val_size=0.7 add up to 1")
    with pytest.raises(SplitError) as info:
        make_splits(20, folds=None, val_size=0.7, test_size=0.3)
    assert str(info.value) == summed
