"""``load_spec``: the sources it accepts, JSON-level errors, versions and the upgrader chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import archlab
from archlab import SpecError, load_spec
from archlab.specs import SPEC_VERSION, parse_spec, upgrade
from archlab.specs.models import Spec


def test_load_from_path_str_and_pathlike(tmp_path: Path, minimal_vit) -> None:
    file = tmp_path / "vit.json"
    file.write_text(json.dumps(minimal_vit()), encoding="utf-8")
    from_str = load_spec(str(file))
    from_path = load_spec(file)
    assert isinstance(from_str, Spec)
    assert from_str == from_path == load_spec(minimal_vit())


def test_load_from_json_string(minimal_vit) -> None:
    text = json.dumps(minimal_vit(), indent=2)
    assert load_spec(text) == load_spec(minimal_vit())
    assert load_spec("\n   " + text) == load_spec(minimal_vit())  # leading blanks are fine


def test_load_from_dict_does_not_mutate_it(minimal_vit) -> None:
    doc = minimal_vit()
    before = json.dumps(doc, sort_keys=True)
    spec = load_spec(doc)
    assert json.dumps(doc, sort_keys=True) == before
    assert spec.outputs == ["head"]
    assert spec.inputs["image"].size == (8, 8)


def test_load_spec_returns_a_loaded_spec_as_is(minimal_vit) -> None:
    spec = load_spec(minimal_vit())
    assert load_spec(spec) is spec


def test_spec_is_frozen(minimal_vit) -> None:
    spec = load_spec(minimal_vit())
    with pytest.raises(ValueError, match="frozen"):
        spec.outputs = ["x"]  # type: ignore[misc]


def test_load_spec_checks_a_spec_built_without_it(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["enc"]["block"]["attention"]["heads"] = 7
    unchecked = Spec.model_validate(doc)  # structure only: the graph was never checked
    with pytest.raises(SpecError):
        load_spec(unchecked)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert exc.value.errors == [("", f"no such file: {path}")]
    assert exc.value.source == str(path)
    assert str(exc.value).startswith(f"{path}: invalid spec (1 problem)")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec(tmp_path)
    [(where, message)] = exc.value.errors
    assert where == ""
    assert message == f"{tmp_path} is a directory, not a spec file"


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(
        SpecError, match=r"(?s)binary\.json: .*not UTF-8 text: byte 0xff at line 1, column 1"
    ) as exc:
        load_spec(path)
    assert [p for p, _ in exc.value.errors] == [""]


def test_invalid_json_string_gives_line_and_column() -> None:
    text = '{\n  "version": 1,\n  "nodes": ]\n}'
    with pytest.raises(SpecError) as exc:
        load_spec(text)
    [(where, message)] = exc.value.errors
    assert where == ""
    assert message == "invalid JSON at line 3, column 12: Expecting value"


def test_invalid_json_file_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n "version": 1,\n\n   "nodes": {,}\n}', encoding="utf-8")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert exc.value.source == str(path)
    [(_, message)] = exc.value.errors
    assert message.startswith("invalid JSON at line 4, column 14: ")
    assert str(exc.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "text",
    ['{"version": 1, "version": 1}', '{"version": 1, "inputs": {"a": {"kind": "x", "kind": "y"}}}'],
    ids=["top-level", "nested"],
)
def test_duplicate_keys_are_refused(text: str) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec(text)
    [(where, message)] = exc.value.errors
    assert where == ""
    assert message in (
        "invalid JSON: key 'version' appears twice in one object",
        "invalid JSON: key 'kind' appears twice in one object",
    )


@pytest.mark.parametrize("value", [[1, 2], 3, "x", None], ids=["list", "int", "str", "null"])
def test_document_must_be_an_object(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(value)
    assert exc.value.errors == [("", f"a spec is a JSON object, not {type(value).__name__}")]


def test_list_document_is_not_an_object() -> None:
    with pytest.raises(SpecError) as exc:
        load_spec([1, 2])  # type: ignore[arg-type]
    assert exc.value.errors == [("", "a spec is a JSON object, not list")]


@pytest.mark.parametrize("text", ["[1, 2]", "3"])
def test_json_text_that_is_not_an_object(text: str) -> None:
    with pytest.raises(SpecError) as exc:
        load_spec(text)
    [(_, message)] = exc.value.errors
    assert "JSON object" in message


def test_non_json_constants_are_refused(minimal_vit) -> None:
    text = json.dumps(minimal_vit()).replace('"heads": 4', '"heads": 4}, "norm": {"eps": Infinity')
    assert "Infinity" in text
    with pytest.raises(SpecError):
        load_spec(text)


# ------------------------------------------------------------------------------------ versions


def test_version_missing(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    del doc["version"]
    error = spec_error(doc, "version", r"'version' is required; add \"version\": 1")
    assert len(error.errors) == 1


def test_version_newer(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["version"] = SPEC_VERSION + 1
    spec_error(doc, "version", r"version 2 is newer than this archlab understands \(1\); upgrade")


@pytest.mark.parametrize(
    ("value", "shown"),
    [("1", "'1'"), (1.5, "1.5"), (True, "True"), (None, "None"), ([1], r"\[1\]")],
    ids=["str", "float", "bool", "null", "list"],
)
def test_version_not_an_int(spec_error, minimal_vit, value: object, shown: str) -> None:
    doc = minimal_vit()
    doc["version"] = value
    spec_error(doc, "version", rf"^version must be an integer, not {shown}$")


@pytest.mark.parametrize("value", [0, -1])
def test_version_below_one(spec_error, minimal_vit, value: int) -> None:
    doc = minimal_vit()
    doc["version"] = value
    spec_error(doc, "version", rf"version {value} is not a spec version \(the first is 1\)")


def test_upgrader_brings_an_old_document_to_the_current_version(
    monkeypatch: pytest.MonkeyPatch, minimal_vit
) -> None:
    """A hypothetical version 0 called ``nodes`` ``layers``: its upgrader renames the key."""
    calls: list[dict] = []

    def upgrade_0_to_1(doc: dict) -> dict:
        calls.append(dict(doc))
        doc["nodes"] = doc.pop("layers")
        return doc

    monkeypatch.setitem(upgrade.UPGRADERS, 0, upgrade_0_to_1)
    old = minimal_vit()
    old["version"] = 0
    old["layers"] = old.pop("nodes")
    original = json.dumps(old, sort_keys=True)

    spec = load_spec(old)

    assert spec == load_spec(minimal_vit())
    assert spec.version == 1
    assert len(calls) == 1 and calls[0]["version"] == 0
    assert json.dumps(old, sort_keys=True) == original  # the caller's document is untouched
    assert archlab.spec_hash(old) == archlab.spec_hash(minimal_vit())
    assert SPEC_VERSION == 1
    assert upgrade.SPEC_VERSION == 1


def test_upgraders_chain(monkeypatch: pytest.MonkeyPatch, minimal_vit) -> None:
    def rename(old: str, new: str) -> upgrade.Upgrader:
        def step(doc: dict) -> dict:
            doc[new] = doc.pop(old)
            return doc

        return step

    monkeypatch.setitem(upgrade.UPGRADERS, -1, rename("net", "graph"))
    monkeypatch.setitem(upgrade.UPGRADERS, 0, rename("graph", "nodes"))
    old = minimal_vit()
    old["version"] = -1
    old["net"] = old.pop("nodes")
    assert load_spec(old) == load_spec(minimal_vit())


def test_upgraded_document_is_still_validated(
    monkeypatch: pytest.MonkeyPatch, spec_error, minimal_vit
) -> None:
    monkeypatch.setitem(upgrade.UPGRADERS, 0, lambda doc: doc)  # forgets to rename 'layers'
    old = minimal_vit()
    old["version"] = 0
    old["layers"] = old.pop("nodes")
    error = spec_error(old, "layers", r"unknown key 'layers'")
    assert ("nodes", "'nodes' is required") in error.errors


def test_no_upgraders_are_registered_in_version_one() -> None:
    assert upgrade.UPGRADERS == {}


def test_validation_message_words_an_error_for_the_model_given() -> None:
    from pydantic import BaseModel, ConfigDict, ValidationError

    from archlab.specs.load import validation_message

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        epochs: int

    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"epoch": 3})
    words = {validation_message(err, tuple(err["loc"]), Settings) for err in info.value.errors()}
    assert "'epochs' is required" in words
    assert any(w.startswith("unknown key 'epoch'") and "epochs" in w for w in words), words
