"""archlab: a declarative model-spec compiler and experiment registry for transformers.

``import archlab`` stays light (no torch): the spec language is loaded eagerly, the compiler
lazily on first use of ``compile_spec`` / ``load_compiled``, checkpoint import on first use of
``import_pretrained``, the runners on first use of ``explain`` / ``embed``, the registry
(SQLAlchemy) on first use of ``Registry``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archlab._version import __version__
from archlab.specs import SpecError, canonical_form, load_spec, spec_hash
from archlab.specs.models import Spec

if TYPE_CHECKING:
    from archlab.compiler import compile_spec, load_compiled
    from archlab.interop.convert import import_pretrained
    from archlab.registry import Registry
    from archlab.runners.embed import embed
    from archlab.runners.explain import explain

_LAZY = {
    "compile_spec": "archlab.compiler",
    "load_compiled": "archlab.compiler",
    "import_pretrained": "archlab.interop.convert",
    "Registry": "archlab.registry",
    "explain": "archlab.runners.explain",
    "embed": "archlab.runners.embed",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'archlab' has no attribute {name!r}")


__all__ = [
    "Registry",
    "Spec",
    "SpecError",
    "__version__",
    "canonical_form",
    "compile_spec",
    "embed",
    "explain",
    "import_pretrained",
    "load_compiled",
    "load_spec",
    "spec_hash",
]
