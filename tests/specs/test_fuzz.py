"""Property test: whatever a user does to a valid spec, ``load_spec`` either returns a ``Spec``
or raises ``SpecError`` with at least one ``(path, message)`` -- never any other exception."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archlab import SpecError, load_spec
from archlab.specs.models import Spec

ZOO = sorted(Path(__file__).parents[2].glob("specs/*.json"))
DOCS = [json.loads(p.read_text(encoding="utf-8")) for p in ZOO]
REF_KEYS = ("input", "memory", "tie")

Path_ = tuple[str | int, ...]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=5000),
    st.floats(allow_nan=True, allow_infinity=False, width=32),
    st.text(max_size=8),
    st.sampled_from(["causal", "none", "rotary", "alibi", "1-3", "3-1", "x", "encoder", "tokens"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=6), scalars, max_size=2),
)


def locations(doc: Any, where: Path_ = ()) -> list[Path_]:
    """Every path to a value inside ``doc`` (the root excluded)."""
    out: list[Path_] = []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    )
    for key, value in items:
        out.append((*where, key))
        out += locations(value, (*where, key))
    return out


def parent(doc: Any, where: Path_) -> Any:
    for key in where[:-1]:
        doc = doc[key]
    return doc


def ids(doc: dict[str, Any], key: str) -> list[str]:
    """The node ids or input names of ``doc`` (none when a mutation broke that object)."""
    value = doc.get(key)
    return [k for k in value if isinstance(k, str)] if isinstance(value, dict) else []


def references(doc: dict[str, Any]) -> list[Path_]:
    """Paths of every reference to a node or input (``input``, ``inputs.N``, ``memory``, ``tie``)."""
    out: list[Path_] = []
    for node_id in ids(doc, "nodes"):
        node = doc["nodes"][node_id]
        if not isinstance(node, dict):
            continue
        out += [("nodes", node_id, k) for k in REF_KEYS if isinstance(node.get(k), str)]
        if isinstance(node.get("inputs"), list):
            out += [("nodes", node_id, "inputs", i) for i in range(len(node["inputs"]))]
    return out


def mutate(data: st.DataObject, doc: dict[str, Any]) -> None:
    operation = data.draw(
        st.sampled_from(["delete", "set", "rename", "unknown", "swap", "retarget"]), label="op"
    )
    paths = locations(doc)
    if operation == "delete":
        in_dicts = [p for p in paths if isinstance(parent(doc, p), dict)]
        if in_dicts:
            where = data.draw(st.sampled_from(in_dicts), label="delete")
            del parent(doc, where)[where[-1]]
    elif operation == "set" and paths:
        where = data.draw(st.sampled_from(paths), label="set")
        parent(doc, where)[where[-1]] = data.draw(values, label="value")
    elif operation == "rename" and ids(doc, "nodes"):
        old = data.draw(st.sampled_from(ids(doc, "nodes")), label="node")
        known = st.sampled_from([*ids(doc, "nodes"), *ids(doc, "inputs"), "forward", "class"])
        new = data.draw(st.one_of(st.text(max_size=6), known), label="new id")
        doc["nodes"] = {(new if k == old else k): v for k, v in doc["nodes"].items()}
        if data.draw(st.booleans(), label="follow references"):
            for where in references(doc):
                if parent(doc, where)[where[-1]] == old:
                    parent(doc, where)[where[-1]] = new
    elif operation == "unknown":
        dicts = [()] + [p for p in paths if isinstance(parent(doc, (*p, None)), dict)]
        where = data.draw(st.sampled_from(dicts), label="object")
        target = doc
        for key in where:
            target = target[key]
        target[data.draw(st.text(max_size=8), label="key")] = data.draw(values, label="value")
    elif operation == "swap":
        refs = references(doc)
        if len(refs) >= 2:
            a, b = data.draw(st.lists(st.sampled_from(refs), min_size=2, max_size=2), label="swap")
            pa, pb = parent(doc, a), parent(doc, b)
            pa[a[-1]], pb[b[-1]] = pb[b[-1]], pa[a[-1]]
    elif operation == "retarget":
        refs = references(doc)
        if refs:
            where = data.draw(st.sampled_from(refs), label="reference")
            known = [*ids(doc, "nodes"), *ids(doc, "inputs")]
            parent(doc, where)[where[-1]] = data.draw(st.sampled_from(known or ["x"]), label="to")


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), which=st.integers(min_value=0, max_value=len(DOCS) - 1))
def test_mutated_specs_load_or_raise_spec_error(data: st.DataObject, which: int) -> None:
    doc = copy.deepcopy(DOCS[which])
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
        mutate(data, doc)
    try:
        spec = load_spec(doc)
    except SpecError as error:
        assert error.errors
        assert all(isinstance(p, str) and isinstance(m, str) and m for p, m in error.errors)
        assert str(error).startswith("invalid spec (")
    else:
        assert isinstance(spec, Spec)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40))
def test_arbitrary_text_loads_or_raises_spec_error(text: str) -> None:
    try:
        load_spec("{" + text)
    except SpecError as error:
        assert error.errors
