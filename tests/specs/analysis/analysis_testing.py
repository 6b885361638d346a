"""Helpers for the analysis tests: the zoo folder and small edits of the minimal specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archlab import load_spec
from archlab.specs.analysis import Graph, analyze

SPECS = Path(__file__).parents[3] / "specs"
Doc = dict[str, Any]


def enc(doc: Doc) -> Doc:
    return doc["nodes"]["enc"]


def attention(doc: Doc) -> Doc:
    return doc["nodes"]["enc"]["block"]["attention"]


def dec_attention(doc: Doc) -> Doc:
    return doc["nodes"]["dec"]["block"]["attention"]


def graph_of(doc: Doc | str) -> Graph:
    return analyze(load_spec(doc))


def with_second_tokens(doc: Doc, vocab: int = 100, **embed: Any) -> Doc:
    """Add an ``ids2`` input and a ``tok2`` embed of it, summed with ``tok`` before the decoder."""
    doc["inputs"]["ids2"] = {"kind": "tokens", "vocab_size": vocab, "max_len": 32}
    doc["nodes"]["tok2"] = {"op": "embed", "input": "ids2", **embed}
    doc["nodes"]["both"] = {"op": "add", "inputs": ["tok", "tok2"]}
    doc["nodes"]["dec"]["input"] = "both"
    return doc


def without_cls(doc: Doc) -> Doc:
    del doc["nodes"]["cls"]
    doc["nodes"]["pos"]["input"] = "patches"
    return doc


def with_memory(doc: Doc) -> Doc:
    doc["inputs"]["src"] = {"kind": "features", "dim": 32, "max_len": 10}
    doc["nodes"]["dec"]["memory"] = "src"
    return doc


def load_zoo(name: str) -> Graph:
    return graph_of(str(SPECS / f"{name}.json"))
