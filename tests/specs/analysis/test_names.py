"""``archlab.specs.analysis.names``: references, cycles, unused nodes, outputs, and the node ids
that would clash with the compiled model's attributes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from analysis_testing import enc, graph_of

from archlab import SpecError, load_spec
from archlab.specs.analysis import MODULE_ATTRIBUTES

# ------------------------------------------------------------------------------------- references


def test_reference_to_a_missing_node_suggests_the_closest(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["input"] = "poss"
    spec_error(doc, "nodes.enc.input", r"^'poss' is not a node or input; did you mean 'pos'\?$")


def test_reference_to_a_missing_input_suggests_the_closest(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["patches"]["input"] = "imgae"
    spec_error(doc, "nodes.patches.input", r"did you mean 'image'\?$")


def test_reference_far_from_every_id_lists_the_known_ids(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["input"] = "zzzz"
    spec_error(
        doc,
        "nodes.enc.input",
        r"^'zzzz' is not a node or input; known: cls, enc, head, image, patches, pos$",
    )


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("inputs", "nodes.both.inputs.1"),
        ("memory", "nodes.dec.memory"),
        ("tie", "nodes.logits.tie"),
    ],
)
def test_unknown_reference_in_every_reference_field(
    spec_error, minimal_gpt, field: str, path: str
) -> None:
    doc = minimal_gpt()
    if field == "inputs":
        doc["nodes"]["both"] = {"op": "add", "inputs": ["tok", "tokk"]}
        doc["nodes"]["dec"]["input"] = "both"
        spec_error(doc, path, r"'tokk' is not a node or input; did you mean 'tok'\?")
    elif field == "memory":
        doc["nodes"]["dec"]["memory"] = "nrom"
        spec_error(doc, path, r"'nrom' is not a node or input; did you mean 'norm'\?")
    else:
        doc["nodes"]["logits"]["tie"] = "tokk"
        spec_error(doc, path, r"'tokk' is not a node or input; did you mean 'tok'\?")


def test_a_typo_in_a_reference_is_one_error(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["input"] = "poss"
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    assert [p for p, _ in exc.value.errors] == ["nodes.enc.input"]


def test_cycle_is_named(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["cls"]["input"] = "enc"  # cls -> pos -> enc -> cls
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    [(path, message)] = [(p, m) for p, m in exc.value.errors if "cycle" in m]
    loop = message.removeprefix("the graph has a cycle: ").split(" -> ")
    assert loop[0] == loop[-1] and len(loop) == 4, message
    assert path == f"nodes.{loop[0]}.input"
    # the loop reads along the data flow, whichever node it starts at
    assert "cls -> pos -> enc" in " -> ".join(loop[:-1] * 2), message


CYCLE_SCRIPT = """
import archlab
doc = {
    "version": 1,
    "inputs": {"image": {"kind": "image", "channels": 1, "size": 8}},
    "nodes": {
        "patches": {"op": "patch_embed", "input": "image", "dim": 64, "patch_size": 2},
        "cls": {"op": "cls_token", "input": "enc"},
        "pos": {"op": "position", "input": "cls", "encoding": "learned"},
        "enc": {"op": "encoder", "input": "pos", "depth": 1, "block": {"attention": {"heads": 4}}},
        "head": {"op": "classify", "input": "enc", "classes": 10},
    },
    "outputs": "head",
}
try:
    archlab.load_spec(doc)
except archlab.SpecError as error:
    print([e for e in error.errors if "cycle" in e[1]])
"""


def test_cycle_error_is_the_same_in_every_process() -> None:
    outputs = set()
    for seed in ("1", "2", "4"):
        result = subprocess.run(
            [sys.executable, "-c", CYCLE_SCRIPT],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=60,
            check=True,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1, outputs


def test_self_loop_is_a_cycle(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["extra"] = {"op": "norm", "input": "extra"}
    doc["nodes"]["sum"] = {"op": "add", "inputs": ["enc", "extra"]}
    doc["nodes"]["head"]["input"] = "sum"
    spec_error(doc, "nodes.extra.input", r"^the graph has a cycle: extra -> extra$")


def test_embed_tied_to_itself(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["tok"]["tie"] = "tok"
    spec_error(doc, "nodes.tok.input", r"cycle: tok -> tok")


def test_unused_node(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["extra"] = {"op": "norm", "input": "enc"}
    error = spec_error(
        doc,
        "nodes.extra",
        r"^node 'extra' is not used by any output \(outputs: head\); remove it or list it in outputs$",
    )
    assert len(error.errors) == 1


def test_unused_input(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["inputs"]["other"] = {"kind": "features", "dim": 4, "max_len": 3}
    error = spec_error(doc, "inputs.other", r"^input 'other' is not used by any output; remove it$")
    assert len(error.errors) == 1


def test_output_naming_an_input(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = ["head", "image"]
    spec_error(doc, "outputs.1", r"^'image' is an input; outputs name nodes$")


def test_single_output_error_path_has_no_index(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = "hed"
    spec_error(doc, "outputs", r"^'hed' is not a node or input; did you mean 'head'\?$")


def test_output_naming_an_unknown_node(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = ["head", "hed"]
    spec_error(doc, "outputs.1", r"did you mean 'head'\?")


def test_output_listed_twice(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = ["head", "head"]
    spec_error(doc, "outputs", r"^outputs list a node twice: \['head', 'head'\]$")


def test_several_outputs(minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = ["head", "enc"]
    graph = graph_of(doc)
    assert graph.spec.outputs == ["head", "enc"]


# ------------------------------------------------------------------------------ module attributes


def test_module_attributes_cover_torch_nn_module() -> None:
    torch = pytest.importorskip("torch")
    public = {name for name in dir(torch.nn.Module) if not name.startswith("_")}
    assert public <= MODULE_ATTRIBUTES, sorted(public - MODULE_ATTRIBUTES)
    instance = torch.nn.Module()
    assert {n for n in vars(instance) if not n.startswith("_")} <= MODULE_ATTRIBUTES


@pytest.mark.parametrize("name", ["_modules", "_parameters", "_buffers", "_version"])
def test_node_id_equal_to_a_private_module_attribute(spec_error, minimal_vit, name: str) -> None:
    doc = minimal_vit()
    doc["nodes"][name] = doc["nodes"].pop("head")
    doc["outputs"] = name
    spec_error(doc, f"nodes.{name}", r"clashes with an attribute of the compiled nn.Module")


@pytest.mark.parametrize("name", ["__class__", "__dict__", "__v_head"])
def test_double_underscore_names_are_reserved(spec_error, minimal_vit, name: str) -> None:
    doc = minimal_vit()
    doc["nodes"][name] = doc["nodes"].pop("head")
    doc["outputs"] = name
    spec_error(doc, f"nodes.{name}", r"reserved for archlab's generated code")
    doc = minimal_vit()
    doc["inputs"][name] = doc["inputs"].pop("image")
    doc["nodes"]["patches"]["input"] = name
    spec_error(doc, f"inputs.{name}", r"reserved for archlab's generated code")


def test_module_attributes_include_the_compiled_models_own() -> None:
    assert {
        "spec",
        "graph",
        "summary",
        "spec_hash",
        "inputs",
        "outputs",
        "code",
    } <= MODULE_ATTRIBUTES
