"""Names and references: identifiers, node ids that would clash with the compiled model,
references to unknown nodes, outputs, cycles and unused nodes.

``data_graph`` checks all of them and returns the graph of data edges the analysis walks in
topological order (None when it has a cycle, which leaves no order).
"""

from __future__ import annotations

import difflib
import keyword
from typing import TYPE_CHECKING, Any

from archlab.specs.errors import ErrorList
from archlab.specs.models import DecoderNode, EmbedNode, LMHeadNode, Spec

if TYPE_CHECKING:
    import networkx as nx

# Attribute names of torch.nn.Module (torch 2.x), hard-coded so that validation imports no torch;
# ``tests/specs/analysis/test_names.py`` checks the list against the installed torch. Plus the names
# archlab's compiled model itself defines.
MODULE_ATTRIBUTES = (
    frozenset(
        [
            "T_destination",
            "add_module",
            "apply",
            "bfloat16",
            "buffers",
            "call_super_init",
            "children",
            "compile",
            "cpu",
            "cuda",
            "double",
            "dump_patches",
            "eval",
            "extra_repr",
            "float",
            "forward",
            "get_buffer",
            "get_extra_state",
            "get_parameter",
            "get_submodule",
            "half",
            "ipu",
            "load_state_dict",
            "modules",
            "mtia",
            "named_buffers",
            "named_children",
            "named_modules",
            "named_parameters",
            "parameters",
            "register_backward_hook",
            "register_buffer",
            "register_forward_hook",
            "register_forward_pre_hook",
            "register_full_backward_hook",
            "register_full_backward_pre_hook",
            "register_load_state_dict_post_hook",
            "register_load_state_dict_pre_hook",
            "register_module",
            "register_parameter",
            "register_state_dict_post_hook",
            "register_state_dict_pre_hook",
            "requires_grad_",
            "set_extra_state",
            "set_submodule",
            "share_memory",
            "smart_apply",
            "state_dict",
            "to",
            "to_empty",
            "train",
            "training",
            "type",
            "xpu",
            "zero_grad",
        ]
    )
    | frozenset({"spec", "graph", "summary", "spec_hash", "inputs", "outputs", "code"})
    | frozenset(
        # the private attributes nn.Module keeps on its class or in every instance's dict
        """_apply _backward_hooks _backward_pre_hooks _buffers _call_impl _compiled_call_impl
    _forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs _forward_pre_hooks
    _forward_pre_hooks_with_kwargs _get_backward_hooks _get_backward_pre_hooks _get_name
    _is_full_backward_hook _load_from_state_dict _load_state_dict_post_hooks
    _load_state_dict_pre_hooks _maybe_warn_non_full_backward_hook _modules _named_members
    _non_persistent_buffers_set _parameters _register_load_state_dict_pre_hook
    _register_state_dict_hook _replicate_for_data_parallel _save_to_state_dict _slow_forward
    _state_dict_hooks _state_dict_pre_hooks _version _wrapped_call_impl""".split()  # noqa: SIM905
    )
)


def data_graph(spec: Spec, errors: ErrorList) -> nx.DiGraph | None:
    """Check names, references, outputs, cycles and unused nodes (reported to ``errors``);
    return the graph of data edges between inputs and nodes, or None when it has a cycle."""
    import networkx as nx  # loaded on first analysis: importing archlab (`arch --help`) stays light

    check_names(spec, errors)
    data = nx.DiGraph()
    data.add_nodes_from(spec.inputs)
    data.add_nodes_from(spec.nodes)
    known = set(spec.inputs) | set(spec.nodes)
    broken_refs = False
    for node_id, node in spec.nodes.items():
        for field_name, ref in references(node):
            if ref not in known:
                errors.add(f"nodes.{node_id}.{field_name}", unknown_ref(ref, known))
                broken_refs = True
            else:
                # a tie shares weights rather than data, but orders the nodes all the same
                data.add_edge(ref, node_id)
    check_outputs(spec, errors)
    cycles = [_rotate(c, list(spec.nodes)) for c in nx.simple_cycles(data)]
    for cycle in sorted(cycles):
        loop = " -> ".join([*cycle, cycle[0]])
        errors.add(f"nodes.{cycle[0]}.input", f"the graph has a cycle: {loop}")
    if not broken_refs:  # a mistyped reference would make everything upstream look unused
        check_unused(spec, data, errors)
    return None if cycles else data


def check_outputs(spec: Spec, errors: ErrorList) -> None:
    """Outputs name nodes, each once."""
    for k, out in enumerate(spec.outputs):
        path = f"outputs.{k}" if len(spec.outputs) > 1 else "outputs"
        if out in spec.inputs:
            errors.add(path, f"{out!r} is an input; outputs name nodes")
        elif out not in spec.nodes:
            errors.add(path, unknown_ref(out, set(spec.nodes)))
    if len(set(spec.outputs)) != len(spec.outputs):
        errors.add("outputs", f"outputs list a node twice: {spec.outputs}")


def check_names(spec: Spec, errors: ErrorList) -> None:
    """Input names and node ids must be usable in the generated code and on the compiled model."""
    for name in spec.inputs:
        check_identifier(errors, f"inputs.{name}", name, "input name")
    for node_id in spec.nodes:
        path = f"nodes.{node_id}"
        check_identifier(errors, path, node_id, "node id")
        if node_id in spec.inputs:
            errors.add(path, f"node id {node_id!r} clashes with the input of that name; rename one")
        if node_id in MODULE_ATTRIBUTES:
            errors.add(
                path,
                f"node id {node_id!r} clashes with an attribute of the compiled nn.Module; rename it",
            )
    for name in spec.inputs:
        if name.endswith("_mask") and name[: -len("_mask")] in spec.inputs:
            errors.add(
                f"inputs.{name}",
                f"input {name!r} clashes with the padding-mask argument of input {name[:-5]!r}",
            )


def check_identifier(errors: ErrorList, path: str, name: str, what: str) -> None:
    """``name`` must be no Python keyword and not start with ``__``."""
    if keyword.iskeyword(name) or name == "self":
        errors.add(path, f"{what} {name!r} is a Python keyword; rename it")
    elif name.startswith("__"):
        errors.add(
            path,
            f"{what} {name!r}: names starting with '__' are reserved for archlab's generated code",
        )


def check_unused(spec: Spec, data: nx.DiGraph, errors: ErrorList) -> None:
    """Every node and input must feed some output."""
    import networkx as nx  # loaded on first analysis: importing archlab (`arch --help`) stays light

    used: set[str] = set()
    for out in spec.outputs:
        if out in data:
            used |= {out} | nx.ancestors(data, out)
    for node_id in spec.nodes:
        if node_id not in used:
            errors.add(
                f"nodes.{node_id}",
                f"node {node_id!r} is not used by any output (outputs: {', '.join(spec.outputs)}); "
                "remove it or list it in outputs",
            )
    for name in spec.inputs:
        if name not in used:
            errors.add(f"inputs.{name}", f"input {name!r} is not used by any output; remove it")


def references(node: Any) -> list[tuple[str, str]]:
    """Every id a node names, with the field it names it in (data inputs, memory and ties)."""
    refs: list[tuple[str, str]] = []
    if hasattr(node, "inputs"):
        refs += [(f"inputs.{k}", r) for k, r in enumerate(node.inputs)]
    else:
        refs.append(("input", node.input))
    if isinstance(node, DecoderNode) and node.memory is not None:
        refs.append(("memory", node.memory))
    if isinstance(node, EmbedNode | LMHeadNode) and node.tie is not None:
        refs.append(("tie", node.tie))
    return refs


def unknown_ref(ref: str, known: set[str]) -> str:
    """The message for a reference to no node or input, with the closest known id if any."""
    close = difflib.get_close_matches(ref, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return f"{ref!r} is not a node or input{hint}"


def _rotate(cycle: list[str], order: list[str]) -> list[str]:
    """Start a cycle at its node written first in the spec, so messages never depend on hashing."""
    first = min(range(len(cycle)), key=lambda i: order.index(cycle[i]) if cycle[i] in order else -1)
    return cycle[first:] + cycle[:first]
