"""``classify.pre_logits`` and pool mode ``first``: validation, canonical form and hash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from archlab import canonical_form, load_spec, spec_hash
from archlab.specs.analysis import ClassifyPlan, analyze

Doc = dict[str, Any]


def text_classifier(**head: Any) -> Doc:
    """Tokens -> embed 24 -> a 1-layer post-norm encoder -> classify 3 with ``head`` fields."""
    return {
        "version": 1,
        "inputs": {"ids": {"kind": "tokens", "vocab_size": 50, "max_len": 12}},
        "nodes": {
            "tok": {"op": "embed", "input": "ids", "dim": 24},
            "enc": {
                "op": "encoder",
                "input": "tok",
                "depth": 1,
                "block": {"attention": {"heads": 3}, "norm": {"placement": "post"}},
            },
            "head": {"op": "classify", "input": "enc", "classes": 3, **head},
        },
        "outputs": "head",
    }


def test_pre_logits_width_defaults_to_the_input_width() -> None:
    graph = analyze(load_spec(text_classifier(pre_logits={})))
    plan = graph.nodes["head"].plan_as(ClassifyPlan)
    assert plan.pre_logits is not None and plan.pre_logits.dim == 24
    wide = analyze(load_spec(text_classifier(pre_logits={"dim": 40})))
    assert wide.nodes["head"].plan_as(ClassifyPlan).pre_logits.dim == 40  # type: ignore[union-attr]


def test_canonical_form_fills_pre_logits_and_omits_it_when_absent() -> None:
    with_pooler = canonical_form(text_classifier(pool="first", pre_logits={"activation": "tanh"}))
    assert with_pooler["nodes"]["head"]["pre_logits"] == {"dim": 24, "activation": "tanh"}
    assert with_pooler["nodes"]["head"]["pool"] == "first"
    plain = canonical_form(text_classifier())
    assert "pre_logits" not in plain["nodes"]["head"]  # specs without it keep their hash
    assert spec_hash(text_classifier(pre_logits={})) == spec_hash(
        text_classifier(pre_logits={"dim": 24, "activation": "tanh"})
    )
    assert spec_hash(text_classifier(pre_logits={})) != spec_hash(text_classifier())
    assert spec_hash(text_classifier(pre_logits={"dim": 25})) != spec_hash(
        text_classifier(pre_logits={})
    )


def test_pool_first_needs_no_cls_token() -> None:
    assert canonical_form(text_classifier(pool="first"))["nodes"]["head"]["pool"] == "first"
    assert spec_hash(text_classifier(pool="first")) != spec_hash(text_classifier(pool="mean"))


@pytest.mark.parametrize(
    ("pre_logits", "path", "pattern"),
    [
        ({"activation": "gelu"}, "nodes.head.pre_logits.activation", "tanh"),
        ({"dim": 0}, "nodes.head.pre_logits.dim", "greater than 0"),
        ({"width": 8}, "nodes.head.pre_logits.width", "unknown key 'width'"),
        ("tanh", "nodes.head.pre_logits", "valid dictionary"),
    ],
)
def test_bad_pre_logits_is_refused(
    spec_error: Callable[..., Any], pre_logits: Any, path: str, pattern: str
) -> None:
    spec_error(text_classifier(pre_logits=pre_logits), path, pattern)
