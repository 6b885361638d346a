"""The training task a spec implies (``task_of``) and what it asks of its data (``Layout``:
its inputs by role and its head's sizes), read from the spec's graph before any data is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from archlab.runners.data.errors import DataError
from archlab.specs.analysis import LMHeadPlan, analyze
from archlab.specs.models import (
    ClassifyNode,
    DecoderNode,
    FeaturesInput,
    ImageInput,
    LMHeadNode,
    Spec,
    TokensInput,
)

Task = Literal["classify", "lm", "seq2seq"]
SpecInput = TokensInput | ImageInput | FeaturesInput


@dataclass(frozen=True)
class Layout:
    """What a spec asks of its data: the task, its inputs by role, and the head's sizes.

    ``inputs`` is ordered by role: the inputs of a classifier in the spec's order (usually one;
    BERT's ids then token types), the one input of an lm spec, or (source, target) for seq2seq. ``vocab`` is the lm_head's vocabulary.
    """

    task: Task
    name: str
    head: str
    inputs: dict[str, SpecInput]
    classes: int | None = None
    vocab: int | None = None

    def describe(self) -> str:
        """The spec's side of a task mismatch, in words."""
        names = list(self.inputs)
        if self.task == "classify":
            kind = self.inputs[names[0]].kind
            return (
                f"{self.name} is a classifier (`{self.head}`: classify, {self.classes} classes, "
                f"on the {kind} input `{names[0]}`)"
            )
        if self.task == "lm":
            return (
                f"{self.name} is a decoder-only language model (`{self.head}`: lm_head on the "
                f"tokens input `{names[0]}`)"
            )
        return (
            f"{self.name} is an encoder-decoder (`{self.head}`: lm_head; source `{names[0]}`, "
            f"target `{names[1]}`)"
        )

    def single_input(self, source: str) -> tuple[str, SpecInput]:
        """The one input of a classify or lm spec; DataError when the head reads several (such
        as BERT's ids and token types), which only ``npz:PATH`` can feed."""
        if len(self.inputs) != 1:
            first, *rest = self.inputs
            further = ", ".join(f"`{n}`" for n in rest)
            raise DataError(
                f"{self.name}'s head `{self.head}` reads {len(self.inputs)} inputs "
                f"({', '.join(f'`{n}`' for n in self.inputs)}) but {source} feeds one; use "
                f"npz:PATH with x for `{first}` and an array named after each further input "
                f"({further})"
            )
        ((name, inp),) = self.inputs.items()
        return name, inp


def task_of(spec: Spec) -> Task:
    """The training task a spec's output implies; DataError if it has no trainable head."""
    return spec_layout(spec).task


def spec_layout(spec: Spec) -> Layout:
    """What ``spec`` asks of its data; DataError if no data source can train it."""
    graph = analyze(spec)
    name = f"the spec `{spec.name}`" if spec.name else "the spec"
    supported = (
        "arch train supports one output: a `classify` node (classification) or an `lm_head` "
        "(a decoder-only language model, or an encoder-decoder for seq2seq)"
    )

    def inputs_of(ref: str) -> list[str]:
        above = set(graph.upstream(ref))
        return [n for n in spec.inputs if n in above]

    if len(spec.outputs) != 1:
        listed = ", ".join(f"`{o}`" for o in spec.outputs)
        raise DataError(f"{name} has {len(spec.outputs)} outputs ({listed}); {supported}")
    head = spec.outputs[0]
    node = spec.nodes[head]
    feeding = inputs_of(head)
    by_role = {n: spec.inputs[n] for n in feeding}
    if isinstance(node, ClassifyNode):
        return Layout("classify", name, head, by_role, classes=node.classes)
    if isinstance(node, LMHeadNode):
        others = [n for n in feeding if not isinstance(spec.inputs[n], TokensInput)]
        if others:
            raise DataError(
                f"{name}'s lm_head `{head}` reads the {spec.inputs[others[0]].kind} input "
                f"`{others[0]}`; language-model and seq2seq data are token ids, so every input "
                "must be of kind tokens"
            )
        vocab = graph.nodes[head].plan_as(LMHeadPlan).vocab
        above = set(graph.upstream(head))
        decoders = [d for n, d in spec.nodes.items() if n in above and isinstance(d, DecoderNode)]
        crossing = [(d.input, d.memory) for d in decoders if d.memory is not None]
        if not crossing and decoders and len(feeding) == 1:
            return Layout("lm", name, head, by_role, vocab=vocab)
        if len(crossing) == 1:
            tgt, src = (inputs_of(ref) for ref in crossing[0])
            if len(src) == 1 and len(tgt) == 1 and src != tgt and len(feeding) == 2:
                roles = {src[0]: spec.inputs[src[0]], tgt[0]: spec.inputs[tgt[0]]}
                return Layout("seq2seq", name, head, roles, vocab=vocab)
        if decoders:
            found = f"reads the token inputs {', '.join(f'`{n}`' for n in feeding)} in a layout"
        else:
            found = "sits on a bidirectional encoder (masked-LM training), a layout"
        raise DataError(
            f"{name}'s lm_head `{head}` {found} that the data sources do not cover; next-token "
            "data needs a decoder over one tokens input, seq2seq data a decoder over one target "
            "input cross-attending to an encoder over one source input"
        )
    raise DataError(f"{name}'s output `{head}` is a `{node.op}` node; {supported}")
