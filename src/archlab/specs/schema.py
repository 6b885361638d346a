"""The JSON Schema of the spec language, for editors (``"$schema"``) and ``arch schema``.

pydantic describes the tagged unions (nodes by ``op``, inputs and masks by ``kind``, ...) as a
``oneOf`` with an OpenAPI ``discriminator``, a keyword generic validators ignore: they then try
every alternative and report "not valid under any of the given schemas" for the whole node. Here
each such union becomes ``if``/``then`` on its tag, so a validator checks a node against its own
op's schema only and reports the bad key or value inside it. Maps keyed by ids (``inputs``,
``nodes``) also refuse keys that are not ids.
"""

from __future__ import annotations

from typing import Any

from archlab.specs.models import Spec


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a version-1 spec document."""
    schema = Spec.model_json_schema(by_alias=True, mode="validation")
    schema = _rewrite(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archlab spec, version 1"
    return schema


def _rewrite(node: Any) -> Any:
    """Tagged unions -> ``if``/``then`` on the tag; id-keyed maps refuse other keys."""
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _rewrite(value) for key, value in node.items()}
    if "discriminator" in out and "oneOf" in out:
        out = _tagged(out)
    if "patternProperties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _tagged(union: dict[str, Any]) -> dict[str, Any]:
    """``{"oneOf": [...], "discriminator": {...}}`` -> an object whose tag selects its schema."""
    tag = union["discriminator"]["propertyName"]
    mapping: dict[str, str] = union["discriminator"]["mapping"]
    rest = {k: v for k, v in union.items() if k not in ("oneOf", "discriminator")}
    return {
        **rest,
        "type": "object",
        "required": [tag],
        "properties": {tag: {"enum": list(mapping)}},
        "allOf": [
            {
                "if": {"properties": {tag: {"const": value}}, "required": [tag]},
                "then": {"$ref": ref},
            }
            for value, ref in mapping.items()
        ],
    }
