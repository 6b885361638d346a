"""The archlab spec language: models, loading with errors by path, canonical form and hash.

Imports no torch.
"""

from archlab.specs.canonical import canonical_form, canonical_json, spec_hash
from archlab.specs.errors import SpecError
from archlab.specs.load import load_spec, parse_spec
from archlab.specs.models import SPEC_VERSION, Spec
from archlab.specs.schema import json_schema

__all__ = [
    "SPEC_VERSION",
    "Spec",
    "SpecError",
    "canonical_form",
    "canonical_json",
    "json_schema",
    "load_spec",
    "parse_spec",
    "spec_hash",
]
