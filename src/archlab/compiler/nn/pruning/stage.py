"""A token pruning stage as `Block` and `Stack` call it, whatever its method.

A stage acts at one of two points of its layer: `before_layer` (DynamicViT), or `after_attention`,
between the layer's attention and its MLP (EViT, ToMe), where it gets what it `need`s from that
attention: `"cls"`, the first query's attention averaged over heads `(B, S)` (EViT), or `"keys"`,
the keys averaged over heads `(B, S, E)` (ToMe). The readers are `hook.READERS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from torch import Tensor, nn

from archlab.compiler.nn.pruning.state import TokenState

if TYPE_CHECKING:
    from archlab.specs.analysis import PruneStage

NeedKind = Literal["cls", "keys"]
Tokens = tuple[Tensor, Tensor | None, TokenState | None]  # sequence, padding mask, state


class TokenStage(nn.Module):
    """The stage hook: both points default to passing the tokens through unchanged."""

    #: what the stage reads from its layer's attention, or None
    need: ClassVar[NeedKind | None] = None

    @classmethod
    def from_plan(cls, stage: PruneStage, name: str) -> TokenStage:
        """The stage of an analysed ``PruneStage``; ``name`` labels its records in a trace."""
        raise NotImplementedError(f"{cls.__name__} is built from its own arguments")

    def before_layer(
        self, x: Tensor, mask: Tensor | None, state: TokenState | None, trace: bool
    ) -> Tokens:
        """Shape: x `(B, T, D)`, mask `(B, T)` -> `(B, T', D)`, `(B, T')`, state."""
        return x, mask, state

    def after_attention(
        self,
        x: Tensor,
        mask: Tensor | None,
        state: TokenState | None,
        seen: Tensor | None,
        trace: bool,
    ) -> Tokens:
        """Shape: x `(B, T, D)`, mask `(B, T)`, seen (what `need` asked) -> `(B, T', D)`, ..."""
        return x, mask, state


__all__ = ["NeedKind", "TokenStage", "Tokens"]
