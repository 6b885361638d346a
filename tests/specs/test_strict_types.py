"""Strict JSON types: the loader and ``docs/spec.schema.json`` accept and refuse the same values.

A string never passes as a number or a boolean, a boolean never as a number; an integer passes
where a float is expected and ``2.0`` where an integer is (JSON has one number type).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import archlab
from archlab import SpecError

ROOT = Path(__file__).parents[2]
jsonschema = pytest.importorskip("jsonschema")


def gpt() -> dict[str, Any]:
    return json.loads((ROOT / "specs" / "gpt-tiny.json").read_text(encoding="utf-8"))


def vit() -> dict[str, Any]:
    return json.loads((ROOT / "specs" / "vit-tiny-digits.json").read_text(encoding="utf-8"))


def with_value(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = json.loads((ROOT / "docs" / "spec.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


ATTENTION = ("nodes", "decoder", "block", "attention")
WRONG = [
    (("nodes", "decoder", "depth"), "2", 'valid integer (got "2"); write it without quotes'),
    (("nodes", "decoder", "depth"), True, "valid integer (got true); true and false are not numbers"),
    (("nodes", "decoder", "depth"), 2.5, "valid integer (got 2.5)"),
    (("nodes", "decoder", "block", "mlp", "bias"), "false", 'valid boolean (got "false"); write it without quotes'),
    (("nodes", "decoder", "block", "mlp", "bias"), 0, "valid boolean (got 0); write true or false"),
    (("nodes", "norm", "eps"), "1e-5", 'valid number (got "1e-5"); write it without quotes'),
    (("nodes", "norm", "eps"), False, "valid number (got false); true and false are not numbers"),
    (("inputs", "ids", "pad_id"), False, "valid integer (got false); true and false are not numbers"),
    (("inputs", "ids", "vocab_size"), "256", "valid integer"),
    ((*ATTENTION, "heads"), True, "valid integer (got true); true and false are not numbers"),
    ((*ATTENTION, "qk_norm"), 1, "valid boolean"),
    ((*ATTENTION, "position"), {"kind": "rotary", "base": "10000"}, "valid number"),
    (("nodes", "decoder", "block", "mlp", "ratio"), "4", "valid number"),
    (("nodes", "decoder", "block", "dropout"), "0.1", "valid number"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "message"), WRONG, ids=[f"{p[-1]}={v!r}" for p, v, _ in WRONG]
)
def test_wrong_json_types_are_refused_by_both(
    validator: Any, path: tuple[str, ...], value: Any, message: str
) -> None:
    doc = with_value(gpt(), path, value)
    with pytest.raises(SpecError) as info:
        archlab.load_spec(doc)
    where = ".".join(map(str, path))
    found = dict(info.value.errors)
    assert any(p.startswith(where) for p in found), found
    assert any(message in m for m in found.values()), found
    errors = list(validator.iter_errors(doc))
    assert errors, "the JSON Schema accepts what the loader refuses"
    assert tuple(jsonschema.exceptions.best_match(errors).absolute_path)[: len(path)] == path


def test_wrong_type_in_an_override_is_refused_by_both(validator: Any) -> None:
    doc = with_value(
        gpt(), ("nodes", "decoder", "overrides"), [{"layers": [1], "mlp": {"bias": 0}}]
    )
    with pytest.raises(
        SpecError,
        match=r"overrides\.0\.mlp\.bias: input should be a valid boolean \(got 0\); write true or false",
    ):
        archlab.load_spec(doc)
    # the schema cannot check a partial block; its layers it can
    bad_layers = with_value(gpt(), ("nodes", "decoder", "overrides"), [{"layers": [True]}])
    with pytest.raises(
        SpecError, match=r"overrides\.0\.layers\.0: input should be a valid integer \(got true\)"
    ):
        archlab.load_spec(bad_layers)
    assert list(validator.iter_errors(bad_layers))


RIGHT = [
    (("version",), 1.0, ("version",), 1),
    (("nodes", "norm", "eps"), 1, ("nodes", "norm", "eps"), 1.0),
    (("nodes", "decoder", "depth"), 4.0, ("nodes", "decoder", "depth"), 4),
    ((*ATTENTION, "heads"), 4.0, (*ATTENTION, "heads"), 4),
]


@pytest.mark.parametrize(
    ("path", "value", "same_path", "same"), RIGHT, ids=[f"{p[-1]}={v!r}" for p, v, _, _ in RIGHT]
)
def test_json_numbers_are_accepted_by_both_and_hash_alike(
    validator: Any, path: tuple[str, ...], value: Any, same_path: tuple[str, ...], same: Any
) -> None:
    doc = with_value(gpt(), path, value)
    assert not list(validator.iter_errors(doc))
    assert archlab.spec_hash(doc) == archlab.spec_hash(with_value(gpt(), same_path, same))


def test_integral_floats_in_shorthands(validator: Any) -> None:
    doc = with_value(vit(), ("inputs", "image", "size"), 8.0)
    assert not list(validator.iter_errors(doc))
    assert archlab.spec_hash(doc) == archlab.spec_hash(vit())
