"""The JSON Schema of the spec language, for editors (``"$schema"``) and ``arch schema``."""

from __future__ import annotations

from typing import Any

from archlab.specs.models import Spec


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a version-1 spec document."""
    schema = Spec.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archlab spec, version 1"
    return schema
