"""The shapes values take between nodes, inferred before any weight exists.

Each shape prints as its tensor's shape with ``B`` for the batch (``(B, 197, 384)``); ``dims`` are
the sizes after ``B``, which is what two shapes are compared by (``same_size``): the other
fields (where a width was declared, the patch grid, the training length) describe a shape's
history, not its size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archlab.specs.models import FeaturesInput, ImageInput, TokensInput


@dataclass(frozen=True)
class TokensShape:
    """Token ids ``(B, T)``."""

    length: int
    vocab: int
    pad_id: int | None = None

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.length,)

    def __str__(self) -> str:
        return _text(self.dims)


@dataclass(frozen=True)
class ImageShape:
    """Images ``(B, C, H, W)``."""

    channels: int
    height: int
    width: int

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)

    def __str__(self) -> str:
        return _text(self.dims)


@dataclass(frozen=True)
class SeqShape:
    """Token sequences ``(B, T, D)``; the first ``n_cls`` tokens are CLS-like and never pruned.

    ``grid`` is the patch grid when the non-CLS tokens are an image's patches in row-major order;
    ``dim_from`` is the spec path the width was declared at (for error messages).
    ``length`` is the length at inference, which every summary reports; ``train_length`` is set
    where training sees a longer sequence: a ``dynamic`` stage upstream keeps every token there
    and only marks the dropped ones in its policy. Sizes that bound the sequence at run time
    (an attention's ``max_len``) take ``max_length``.
    """

    length: int
    dim: int
    n_cls: int = 0
    grid: tuple[int, int] | None = None
    dim_from: str = ""
    train_length: int | None = None

    @property
    def patches(self) -> int:
        return self.length - self.n_cls

    @property
    def max_length(self) -> int:
        """The longest this sequence gets: in training when a dynamic stage kept every token."""
        return self.length if self.train_length is None else self.train_length

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.length, self.dim)

    def __str__(self) -> str:
        return _text(self.dims)


@dataclass(frozen=True)
class VecShape:
    """One vector per sample ``(B, D)``."""

    dim: int
    dim_from: str = ""

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.dim,)

    def __str__(self) -> str:
        return _text(self.dims)


Shape = TokensShape | ImageShape | SeqShape | VecShape


def same_size(a: Shape, b: Shape) -> bool:
    """Whether ``a`` and ``b`` are the same kind of value with the same sizes."""
    return type(a) is type(b) and a.dims == b.dims


def input_shape(name: str, inp: Any) -> Shape:
    """The shape of the spec input ``name`` (a ``TokensInput``, ``ImageInput`` or
    ``FeaturesInput``)."""
    if isinstance(inp, TokensInput):
        return TokensShape(inp.max_len, inp.vocab_size, inp.pad_id)
    if isinstance(inp, ImageInput):
        return ImageShape(inp.channels, inp.size[0], inp.size[1])
    assert isinstance(inp, FeaturesInput)
    return SeqShape(inp.max_len, inp.dim, dim_from=f"inputs.{name}.dim")


def _text(dims: tuple[int, ...]) -> str:
    return "(B, " + ", ".join(str(d) for d in dims) + ")"
