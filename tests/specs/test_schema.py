"""``json_schema()``: a JSON Schema (draft 2020-12) that editors can use on every zoo spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from archlab.specs import json_schema
from archlab.specs.models import OPS

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


def test_node_discriminator_covers_every_op(schema: dict[str, Any]) -> None:
    nodes = schema["properties"]["nodes"]
    [node_schema] = nodes["patternProperties"].values()
    assert set(node_schema["discriminator"]["mapping"]) == set(OPS)
    for ref in node_schema["discriminator"]["mapping"].values():
        definition = resolve(schema, {"$ref": ref})
        assert definition["additionalProperties"] is False
        assert "op" in definition["required"]


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
    by_op = {
        op: resolve(schema, {"$ref": ref})
        for op, ref in schema["properties"]["nodes"]["patternProperties"][
            "^[A-Za-z_][A-Za-z0-9_]*$"
        ]["discriminator"]["mapping"].items()
    }
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
