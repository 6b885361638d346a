"""spec -> graph (``graph``, torch-free) -> costs (``cost``, torch-free) -> nn.Module (``model``:
``builders`` make the modules, ``codegen`` writes ``forward``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archlab.compiler.model import CompiledModel, compile_spec, load_compiled

_LAZY = {"compile_spec", "load_compiled", "CompiledModel"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from archlab.compiler import model

        return getattr(model, name)
    raise AttributeError(f"module 'archlab.compiler' has no attribute {name!r}")


__all__ = ["CompiledModel", "compile_spec", "load_compiled"]
