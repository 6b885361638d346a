"""``json_schema()``: a JSON Schema (draft 2020-12) that editors can use on every zoo spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from archlab.specs import json_schema
from archlab.specs.models import ID_PATTERN, OPS

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json_schema()


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = schema["$defs"][ref.removeprefix("#/$defs/")]
    return node


def json_types(schema: dict[str, Any], node: dict[str, Any]) -> set[str]:
    """The JSON types a (sub)schema admits, following $ref, anyOf and oneOf."""
    node = resolve(schema, node)
    types: set[str] = set()
    if "type" in node:
        types |= {node["type"]} if isinstance(node["type"], str) else set(node["type"])
    if "const" in node:
        types.add(type(node["const"]).__name__)
    for key in ("anyOf", "oneOf"):
        for sub in node.get(key, []):
            types |= json_types(schema, sub)
    return types


def walk(node: Any) -> list[Any]:
    out = [node]
    if isinstance(node, dict):
        for value in node.values():
            out += walk(value)
    elif isinstance(node, list):
        for value in node:
            out += walk(value)
    return out


def test_schema_is_plain_json(schema: dict[str, Any]) -> None:
    assert json.loads(json.dumps(schema)) == schema


def test_schema_header(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://archlab.dev/schema/spec-v1.json"
    assert schema["title"] == "archlab spec, version 1"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"version", "inputs", "nodes", "outputs"}
    assert schema["properties"]["version"]["const"] == 1


def test_every_ref_resolves(schema: dict[str, Any]) -> None:
    assert "$defs" in schema
    refs = [n["$ref"] for n in walk(schema) if isinstance(n, dict) and "$ref" in n]
    assert refs
    for ref in refs:
        assert ref.removeprefix("#/$defs/") in schema["$defs"], ref


def by_tag(schema: dict[str, Any], union: dict[str, Any], tag: str) -> dict[str, dict[str, Any]]:
    """The schema each value of ``tag`` selects in a tagged union (``if``/``then`` on the tag)."""
    out = {}
    for branch in union["allOf"]:
        value = branch["if"]["properties"][tag]["const"]
        assert branch["if"]["required"] == [tag]
        out[value] = resolve(schema, branch["then"])
    return out


def node_schemas(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [node_schema] = schema["properties"]["nodes"]["patternProperties"].values()
    return by_tag(schema, node_schema, "op")


def test_node_kinds_are_told_apart_by_op(schema: dict[str, Any]) -> None:
    """Generic validators understand if/then on ``op`` (not OpenAPI's ``discriminator``)."""
    [node_schema] = schema["properties"]["nodes"]["patternProperties"].values()
    assert "discriminator" not in json.dumps(schema)
    assert node_schema["required"] == ["op"]
    assert set(node_schema["properties"]["op"]["enum"]) == set(OPS)
    by_op = node_schemas(schema)
    assert set(by_op) == set(OPS)
    for definition in by_op.values():
        assert definition["additionalProperties"] is False
        assert "op" in definition["required"]


@pytest.mark.parametrize("where", ["inputs", "nodes"])
def test_id_maps_refuse_keys_that_are_not_ids(schema: dict[str, Any], where: str) -> None:
    assert list(schema["properties"][where]["patternProperties"]) == [ID_PATTERN]
    assert schema["properties"][where]["additionalProperties"] is False


def test_strict_objects_forbid_unknown_keys(schema: dict[str, Any]) -> None:
    strict = {name for name, d in schema["$defs"].items() if d.get("additionalProperties") is False}
    assert strict >= {"Attention", "Block", "Mlp", "BlockNorm", "SlidingWindowMask", "PruneAt"}
    # overrides carry partial blocks, checked once merged
    assert schema["$defs"]["Override"]["required"] == ["layers"]


def test_zoo_top_level_keys_are_known(schema: dict[str, Any], zoo_path: Path) -> None:
    doc = json.loads(zoo_path.read_text(encoding="utf-8"))
    assert set(doc) <= set(schema["properties"])
    assert set(schema["required"]) <= set(doc)


def test_zoo_node_and_block_keys_are_known(schema: dict[str, Any], zoo_path: Path) -> None:
    doc = json.loads(zoo_path.read_text(encoding="utf-8"))
    defs = schema["$defs"]
    by_op = node_schemas(schema)
    for node in doc["nodes"].values():
        assert set(node) <= set(by_op[node["op"]]["properties"]), node
        if "block" in node:
            assert set(node["block"]) <= set(defs["Block"]["properties"])
            assert set(node["block"]["attention"]) <= set(defs["Attention"]["properties"])


# Shorthands the loader accepts (spec-language.md, "Canonical form"), which an editor using the
# schema must not flag.
SHORTHANDS = [
    (("properties", "outputs"), "string"),
    (("$defs", "ImageInput", "properties", "size"), "integer"),
    (("$defs", "PatchEmbedNode", "properties", "patch_size"), "integer"),
    (("$defs", "Attention", "properties", "mask"), "string"),
    (("$defs", "Attention", "properties", "position"), "string"),
    (("$defs", "Override", "properties", "layers"), "string"),
]


@pytest.mark.parametrize(
    ("where", "json_type"),
    SHORTHANDS,
    ids=[w[-1] if len(w) == 2 else f"{w[1]}.{w[-1]}" for w, _ in SHORTHANDS],
)
def test_schema_admits_shorthands(
    schema: dict[str, Any], where: tuple[str, ...], json_type: str
) -> None:
    node: Any = schema
    for key in where:
        node = node[key]
    assert json_type in json_types(schema, node)


def test_jsonschema_validates_the_zoo(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(ROOT.glob("specs/*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        errors = [e.message for e in validator.iter_errors(doc)]
        assert not errors, (path.name, errors)


def test_docs_schema_is_current(schema: dict[str, Any]) -> None:
    """The zoo's "$schema" points at docs/spec.schema.json: it must be the current schema."""
    path = ROOT / "docs" / "spec.schema.json"
    assert json.loads(path.read_text(encoding="utf-8")) == schema


def _gpt() -> dict[str, Any]:
    return json.loads((ROOT / "specs" / "gpt-tiny.json").read_text(encoding="utf-8"))


# (where the bad key goes, the key): an editor must flag that object, not the node or the document
BAD_KEYS = [
    (("nodes", "tok"), "dimm"),
    (("nodes", "decoder"), "deepth"),
    (("nodes", "decoder", "block", "attention"), "headz"),
    (("nodes", "decoder", "block", "mlp"), "activaton"),
    (("inputs", "ids"), "pad"),
]


@pytest.mark.parametrize(("where", "key"), BAD_KEYS, ids=[k for _, k in BAD_KEYS])
def test_editor_error_points_at_the_object_with_the_bad_key(
    schema: dict[str, Any], where: tuple[str, ...], key: str
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = _gpt()
    target: Any = doc
    for step in where:
        target = target[step]
    target[key] = 1
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    best = jsonschema.exceptions.best_match(errors)
    assert best is not None
    assert tuple(best.absolute_path) == where
    assert best.validator == "additionalProperties"
    assert repr(key) in best.message
    assert len(errors) == 1, [e.message for e in errors]


def test_editor_error_for_a_mask_object_points_inside_it(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = _gpt()
    attention = doc["nodes"]["decoder"]["block"]["attention"]
    attention["mask"] = {"kind": "sliding_window", "window": 8, "windw": 3}
    best = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(doc)
    )
    assert best is not None
    assert tuple(best.absolute_path) == ("nodes", "decoder", "block", "attention", "mask")
    assert "'windw'" in best.message


def test_editor_error_for_an_unknown_op_points_at_op(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = _gpt()
    doc["nodes"]["tok"]["op"] = "embedd"
    best = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(doc)
    )
    assert best is not None
    assert tuple(best.absolute_path) == ("nodes", "tok", "op")


@pytest.mark.parametrize("where", ["inputs", "nodes"])
@pytest.mark.parametrize("bad", ["1st", "a-b", "dé", ""], ids=["digit", "dash", "accent", "empty"])
def test_editor_rejects_a_bad_id(schema: dict[str, Any], where: str, bad: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = _gpt()
    doc[where][bad] = doc[where]["ids" if where == "inputs" else "norm"]
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert [tuple(e.absolute_path) for e in errors] == [(where,)]
    assert repr(bad) in errors[0].message
