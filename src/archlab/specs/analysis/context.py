"""What the per-op infer functions share while one spec is analysed: ``Context``."""

from __future__ import annotations

from dataclasses import dataclass, field

from archlab.specs.analysis.plans import NodeInfo
from archlab.specs.analysis.shapes import ImageShape, SeqShape, TokensShape, VecShape
from archlab.specs.errors import ErrorList
from archlab.specs.models import Spec


@dataclass
class Context:
    """The spec under analysis, the problems found so far, and the nodes inferred so far (in
    topological order, so every input of the node at hand is in ``infos`` or was refused)."""

    spec: Spec
    errors: ErrorList = field(default_factory=ErrorList)
    infos: dict[str, NodeInfo] = field(default_factory=dict)

    def seq(self, node_id: str, ref: str, op: str, field_name: str = "input") -> SeqShape | None:
        """The sequence ``ref`` that node ``node_id`` (of ``op``) reads at ``field_name``; None,
        reported, when ``ref`` is no sequence."""
        shape = self.infos[ref].shape
        if isinstance(shape, SeqShape):
            return shape
        self.errors.add(
            f"nodes.{node_id}.{field_name}",
            f"{op} needs a token sequence, but {self.describe(ref)}",
        )
        return None

    def describe(self, ref: str) -> str:
        """What ``ref`` is, for a message saying why a node cannot read it."""
        shape = self.infos[ref].shape
        if isinstance(shape, TokensShape):
            what = "a tokens input (add an embed node first)"
        elif isinstance(shape, ImageShape):
            what = "an image input (add a patch_embed node first)"
        elif isinstance(shape, VecShape):
            what = f"pooled vectors {shape}"
        else:
            what = f"a sequence {shape}"
        return f"{ref!r} is {what}"
