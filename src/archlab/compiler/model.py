"""The compiled model: an ``nn.Module`` built from an analysed spec, and its weights files.

Each spec node becomes a submodule named after its id, so state-dict keys read like the spec
(``encoder.layers.3.attention.qkv.weight``); the builders of ``builders.BUILD`` make them.
``forward`` is generated Python source (``codegen``, shown by ``arch compile --show-code``): one
line per node in topological order, padding masks carried beside the values, no dictionaries or
loops over the graph at run time, so ``torch.compile`` and ``torch.export`` see straight-line
code. Weights are saved as safetensors with the canonical spec in the header.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_parameter_registration_hook

from archlab.compiler.builders import BuildContext, build_node
from archlab.compiler.codegen import generate_forward
from archlab.compiler.devices import resolve_device
from archlab.compiler.errors import CompileError
from archlab.compiler.freeze import FreezeReport, FrozenModelError, freeze_model
from archlab.compiler.memory import check_build
from archlab.compiler.nn.attention import Attention, KernelChoice
from archlab.compiler.nn.linear_attention import LinearAttention
from archlab.compiler.nn.pruning import TokenTrace
from archlab.compiler.paths import performance_paths
from archlab.compiler.pruning import dense_flops, pruning_stages
from archlab.compiler.summary import Summary, build_rows, shape_list
from archlab.specs import canonical_form, canonical_json, load_spec, spec_hash
from archlab.specs.analysis import (
    Graph,
    ImageShape,
    SeqShape,
    TokensShape,
    analyze,
    has_pruning,
)
from archlab.specs.load import SpecSource, parse_json
from archlab.specs.models import Spec

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise CompileError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}") from None


# ----------------------------------------------------------------------------------- the model


class CompiledModel(nn.Module):
    """A module built from a spec. Submodules are named after node ids.

    ``forward`` takes the spec's inputs by name (with a single input, also positionally) and, for
    every sequence input ``x``, an optional ``x_mask`` (bool ``(B, T)``, True for real tokens).
    One output returns a tensor; several return a dict keyed by node id.
    """

    spec: Spec
    graph: Graph
    code: str
    #: what ``freeze()`` did; None while the model can still be trained
    frozen: FreezeReport | None = None

    def freeze(self, *, compile: bool | None = None, mode: str | None = None) -> CompiledModel:
        """Make this model inference-only, in place, and return it.

        On the CPU (float32) its linear layers get weights packed once for oneDNN with the bias
        and the following activation fused into the product; on CUDA its float32 weights become
        bfloat16 and the forward is compiled. Where an operator is missing the model keeps the
        plain path, and ``summary().paths`` says why. ``compile`` forces torch.compile on or off
        (on the CPU it then uses inductor's freezing instead of the eager packing); ``mode`` is
        torch.compile's mode (``reduce-overhead`` captures CUDA graphs).

        Afterwards the forward runs under ``torch.no_grad``; ``train()``, ``requires_grad_()``,
        ``to()`` / ``cuda()`` / ``half()``, and inputs that require a gradient raise
        ``FrozenModelError``. ``save()`` writes the same weights file as before freezing.
        """
        freeze_model(self, compile=compile, mode=mode)
        return self

    def train(self, mode: bool = True) -> CompiledModel:
        if mode and self.frozen is not None:
            raise FrozenModelError(
                "this model is frozen for inference (CompiledModel.freeze()) and cannot train; "
                "build or load it again without freeze() to train it"
            )
        return super().train(mode)

    def requires_grad_(self, requires_grad: bool = True) -> CompiledModel:
        if requires_grad and self.frozen is not None:
            raise FrozenModelError(
                "this model is frozen for inference (CompiledModel.freeze()): its weights take "
                "no gradient; build or load it again without freeze()"
            )
        return super().requires_grad_(requires_grad)

    def _apply(self, fn: Any, recurse: bool = True) -> CompiledModel:
        if self.frozen is not None:
            raise FrozenModelError(
                "this model is frozen for inference (CompiledModel.freeze()): its weights are "
                "packed for one device and dtype; choose the device and dtype when building it "
                "(compile_spec / load_compiled), then freeze"
            )
        return super()._apply(fn, recurse)

    def summary(self) -> Summary:
        """Per-node shapes, parameters, FLOPs (multiply-add = 2) and attention kernels."""
        kernels: dict[str, tuple[str, str]] = {}
        for node_id in self.graph.expanded:
            choice = _kernel_of(self, self.graph, node_id)
            if choice is not None:
                kernels[node_id] = choice
        rows = build_rows(self.graph, kernels)
        first = next(iter(self.parameters()), None)
        stages = pruning_stages(self.graph)
        weight_bytes = sum(t.numel() * t.element_size() for t in _unique_tensors(self))
        return Summary(
            name=self.spec.name,
            spec_hash=self.spec_hash,
            params=sum(r.params for r in rows),
            flops=sum(r.flops for r in rows),
            nodes=rows,
            outputs={o: shape_list(self.graph.shape(o)) for o in self.spec.outputs},
            weight_bytes=weight_bytes,
            dtype=str(first.dtype).removeprefix("torch.") if first is not None else "float32",
            device=str(first.device) if first is not None else "cpu",
            kernels=_kernel_table(self),
            pruning=[stage.to_dict() for stage in stages],
            paths=[path.to_dict() for path in performance_paths(self)],
            dense_flops=dense_flops(self.spec) if stages else None,
        )

    @property
    def spec_hash(self) -> str:
        return spec_hash(self.spec)

    def example_inputs(
        self, batch: int = 2, length: int | None = None, seed: int = 0
    ) -> dict[str, Tensor]:
        """Random inputs of the declared shapes (tokens avoid ``pad_id``), on the model's device."""
        gen = torch.Generator().manual_seed(seed)
        first = next(iter(self.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        out = {}
        for name, info in self.graph.nodes.items():
            if info.op != "input":
                continue
            shape = info.shape
            if isinstance(shape, TokensShape):
                T = min(length or shape.length, shape.length)
                ids = torch.randint(0, shape.vocab, (batch, T), generator=gen)
                if shape.pad_id is not None and shape.vocab > 1:
                    ids = torch.where(ids == shape.pad_id, (ids + 1) % shape.vocab, ids)
                out[name] = ids.to(device)
            elif isinstance(shape, ImageShape):
                x = torch.randn(batch, shape.channels, shape.height, shape.width, generator=gen)
                out[name] = x.to(device, dtype)
            else:
                assert isinstance(shape, SeqShape)
                T = min(length or shape.length, shape.length)
                out[name] = torch.randn(batch, T, shape.dim, generator=gen).to(device, dtype)
        return out

    def generate(
        self, ids: Tensor | None = None, max_new_tokens: int = 16, **options: Any
    ) -> Tensor:
        """Continue the prompt ``ids`` `(B, T)` by up to ``max_new_tokens`` tokens, with a cache
        of keys and values (``archlab.compiler.decoding``). -> `(B, T + new)` int64.

        For a decoder-only spec ``ids`` is the prompt of its tokens input; for an
        encoder-decoder pass the source by name (``src=...``, ``src_mask=...``) and
        ``start_id`` (or a target prompt as ``ids``). Options:

        - ``do_sample`` (greedy when False), ``temperature``, ``top_k``, ``top_p`` (in (0, 1]),
          ``generator`` (a seeded ``torch.Generator`` makes sampling repeatable);
        - ``num_beams`` > 1: beam search, outputs scored by log-probability divided by
          (new tokens) ** ``length_penalty``;
        - ``eos_id``: a row that emits it is finished and continues as ``pad_id`` (default
          ``eos_id``); decoding stops once every row has finished;
        - ``ids_mask`` (bool `(B, T)`, True = real token): prompts of different lengths,
          left-padded; each row decodes as it would alone;
        - ``static``: fixed-shape steps (the cache attends over all its slots), for
          ``compile`` (options of ``torch.compile``, such as ``{"mode": "reduce-overhead"}``
          for CUDA graphs);
        - ``streamer``: called with each new column of tokens `(B,)` as it is chosen;
        - ``suppress_ids``: ids never chosen (a char vocabulary's unused ids).

        Raises ``archlab.compiler.decoding.DecodeError`` (a ``ValueError``) for a spec that
        cannot generate or a request it cannot serve, before any token is computed.
        """
        from archlab.compiler.generation import generate

        return generate(self, ids, max_new_tokens, **options)

    def trace_tokens(self, *args: Any, **kwargs: Any) -> tuple[Any, TokenTrace]:
        """Run ``forward`` and return its output with what the pruning stages did.

        The trace maps each pruned stack and ``token_prune`` node to its state (kept-token
        ``index``, ``source`` map, ToMe ``size``, DynamicViT ``policy`` in training) and output;
        ``trace.stages`` lists every stage, ``trace.kept(stage)`` which patches survived it.
        """
        if not has_pruning(self.graph):
            return self(*args, **kwargs), TokenTrace({}, {})
        out, (states, features) = self(*args, **kwargs, **{"__trace": True})
        return out, TokenTrace(states, features)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Weights as safetensors, with the canonical spec in the metadata (``load_compiled``).

        A regular file (or a new path) is replaced atomically and gets the umask's permissions;
        an existing device or FIFO (``/dev/stdout``) is written through, never replaced."""
        from archlab.files import replace_atomically

        replace_atomically(path, self.write_safetensors)

    def write_safetensors(self, target: str) -> None:
        """``save`` without the atomic replacement: write a new file (or an existing device or
        FIFO) at exactly ``target``."""
        from safetensors import SafetensorError
        from safetensors.torch import save, save_file

        from archlab._version import __version__

        meta = {
            "archlab.spec": canonical_json(canonical_form(self.spec)),
            "archlab.spec_hash": self.spec_hash,
            "archlab.version": __version__,
            "format": "pt",
        }
        tensors = unshared_state(self)
        header = len(json.dumps(meta)) + 200 * len(tensors)  # the tensors' entries: ~100 B each
        if header > MAX_HEADER_BYTES:
            raise CompileError(
                f"the spec is {len(meta['archlab.spec']):,} characters of JSON, too large to "
                f"embed in a safetensors header (at most {MAX_HEADER_BYTES:,} bytes in all): "
                "shorten its strings (name, description) to save its weights"
            )
        try:
            if os.path.lexists(target):  # a device or FIFO that replace_atomically writes through
                data = save(tensors, metadata=meta)
                with open(target, "wb") as f:
                    f.write(data)
                return
            with open(target, "xb") as f:  # created here, so with the umask's permissions
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            save_file(tensors, target, metadata=meta)  # (its own file is owner-only)
            os.chmod(target, mode)
        except SafetensorError as exc:
            raise CompileError(f"cannot save the weights as safetensors: {exc}") from None


def unshared_state(model: nn.Module) -> dict[str, Tensor]:
    """The state dict with each shared tensor (tied embeddings) once, under its first name, as
    safetensors stores it (``load_model`` restores the other names from the model)."""
    seen: set[int] = set()
    out: dict[str, Tensor] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[name] = tensor.detach().contiguous()
    return out


def compile_spec(
    spec: SpecSource,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    attention_kernel: str | None = None,
    seed: int | None = None,
    max_params: int | None = None,
    meta_weights: bool = False,
) -> CompiledModel:
    """Build the module of a spec (a path, JSON text, dict or ``Spec``).

    ``device``: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto``. ``dtype``: the weights'
    dtype (``float32`` default, ``bfloat16``, ``float16``, ``float64``). ``attention_kernel``
    forces one softmax kernel everywhere (``reference``, ``sdpa``, ``sdpa_mask``, ``flex``) where
    it can run; by default each attention picks the fastest kernel that honours its mask and
    positions (see ``summary().kernels``). ``seed`` makes the initial weights reproducible.

    Before allocating anything, the weights and position tables the spec needs are compared with
    the memory available (on the host, and on a CUDA device); a model that would not fit raises
    ``ModelTooLargeError`` (a ``UserInputError``). ``max_params`` replaces that check by a plain
    limit on the parameter count, for a machine whose free memory will grow.

    ``meta_weights``: the parameters are left on the ``meta`` device in ``dtype`` (shapes only:
    nothing drawn, written or copied), for a caller that supplies every one of them with
    ``load_state_dict(..., assign=True)``, as importing a checkpoint does. Everything else is
    as without it: the buffers (position tables, rotary caches) are computed and placed on
    ``device``, and the attention kernels are chosen for ``device``, not for ``meta``.
    """
    spec = load_spec(spec)
    graph = analyze(spec)
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device) if device is not None else torch.device("cpu")
    check_build(graph, dev, torch_dtype, max_params)
    if seed is not None:
        torch.manual_seed(seed)
    context = BuildContext(graph, dev, torch_dtype, attention_kernel)
    forward, code = generate_forward(spec, graph)
    model_cls = type(f"Compiled_{_class_name(spec.name)}", (CompiledModel,), {"forward": forward})
    model = model_cls()
    model.spec, model.graph, model.code = spec, graph, code
    if meta_weights:
        with _parameters_on_meta():
            for node_id in graph.order:
                model.add_module(node_id, build_node(context, node_id))
        _weights_to_meta(model, dev, torch_dtype)
        return model
    for node_id in graph.order:
        model.add_module(node_id, build_node(context, node_id))
    return model.to(device=dev, dtype=torch_dtype) if torch_dtype is not None else model.to(dev)


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter this thread registers meanwhile is replaced at once by a meta tensor of
    its shape and dtype, so that ``nn.init`` (a no-op on ``meta``) neither draws nor writes the
    values a checkpoint replaces, and the memory they were allocated in is never touched.
    Buffers are computed as usual. Other threads' modules are left alone."""
    thread = threading.get_ident()

    def to_meta(module: nn.Module, name: str, param: Tensor | None) -> Tensor | None:
        if param is None or param.is_meta or threading.get_ident() != thread:
            return None
        meta = torch.empty_like(param, device="meta")
        return nn.Parameter(meta, requires_grad=param.requires_grad)

    # torch's hint says None, but a hook's returned parameter replaces the registered one
    handle = register_module_parameter_registration_hook(to_meta)  # type: ignore[arg-type]
    try:
        yield
    finally:
        handle.remove()


def _weights_to_meta(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> None:
    """Every parameter replaced by a meta tensor of its shape (floating ones in ``dtype``), tied
    parameters still one tensor; every buffer moved and cast as ``Module.to(device, dtype)``
    would, and still shared where it was."""
    params = list(model.named_parameters(remove_duplicate=False))
    buffers = list(model.named_buffers(remove_duplicate=False))  # both held: ids stay unique
    done: dict[int, Tensor] = {}  # id of the built tensor -> its replacement

    def put(name: str, tensor: Tensor) -> None:
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner), leaf, tensor)

    for name, param in params:
        if id(param) not in done:
            cast = dtype if dtype is not None and param.is_floating_point() else param.dtype
            meta = torch.empty_like(param, device="meta", dtype=cast)
            done[id(param)] = nn.Parameter(meta, requires_grad=param.requires_grad)
        put(name, done[id(param)])
    for name, buffer in buffers:
        if id(buffer) not in done:
            floating = buffer.is_floating_point() or buffer.is_complex()
            done[id(buffer)] = buffer.to(device, dtype if floating else None)
        put(name, done[id(buffer)])


def _class_name(name: str | None) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in (name or "spec"))
    return cleaned or "spec"


def load_compiled(
    path: str | os.PathLike[str], *, device: str | torch.device | None = None
) -> CompiledModel:
    """Rebuild a model saved by ``CompiledModel.save`` / ``arch compile -o`` with its weights.

    The file's header (size-limited) is read first: its embedded spec must be JSON text, and
    its tensors' names, shapes and dtypes must be those the spec's module has (checked on the
    ``meta`` device, so nothing is allocated) before the model is built and the weights read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    tensors, meta = read_safetensors_header(path)
    text = meta.get("archlab.spec")
    if text is None:
        raise CompileError(
            f"{path} carries no archlab spec in its metadata; was it saved by archlab?"
        )
    if not text.lstrip().startswith("{"):
        raise CompileError(
            f"the spec embedded in {path} is not a JSON object (it starts {text[:40]!r}); "
            "archlab embeds the spec's JSON text, never a path: the file was not saved by "
            "archlab or was altered"
        )
    try:
        saved = load_spec(parse_json(text, f"the spec embedded in {path}"))
    except RecursionError:
        raise CompileError(f"the spec embedded in {path} is nested too deeply") from None
    first_dtype = next((d for _s, name in tensors.values() if (d := DTYPES.get(name))), None)
    with torch.device("meta"):  # shapes and dtypes only: nothing is allocated
        expected = compile_spec(saved, device="meta", dtype=first_dtype)
    expected_tensors = tensor_table(expected.state_dict(keep_vars=True))
    problems = tensor_mismatches(expected_tensors, tensors, tied_aliases(expected))
    if problems:
        raise CompileError(f"the weights in {path} do not fit the spec they carry: {problems}")
    model = compile_spec(saved, device=device, dtype=first_dtype)
    try:
        load_model(model, os.fspath(path), device=str(next(model.parameters()).device))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CompileError(f"cannot read the weights in {path}: {exc}") from None
    return model


MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit
_SAFE_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip
TensorTable = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, dtype name)


def read_safetensors_header(path: str | os.PathLike[str]) -> tuple[TensorTable, dict[str, str]]:
    """A safetensors file's tensors (name -> shape, dtype) and metadata, from its header alone:
    no tensor data is read, and a header over ``MAX_HEADER_BYTES`` is refused unread."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise CompileError(f"{path} is not a regular file, so not a weights file")
            prefix = f.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if length > MAX_HEADER_BYTES:
                raise CompileError(
                    f"{path} is not a safetensors file: it declares a header of {length:,} "
                    f"bytes, more than the format allows ({MAX_HEADER_BYTES:,})"
                )
            raw = f.read(length) if 0 <= length <= info.st_size - 8 else b""
    except FileNotFoundError:
        raise CompileError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise CompileError(f"{path} is a directory, not a weights file") from None
    except OSError as exc:
        raise CompileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        header = None
    damaged = CompileError(f"{path} is not a safetensors file (its header is damaged or absent)")
    if not isinstance(header, dict):
        raise damaged
    meta = header.pop("__metadata__", None) or {}
    if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise damaged
    tensors: TensorTable = {}
    for name, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise damaged
        dtype = str(entry.get("dtype"))
        tensors[name] = (tuple(shape), _SAFE_DTYPES.get(dtype, dtype))
    return tensors, meta


def tensor_mismatches(
    expected: TensorTable, found: TensorTable, aliases: dict[str, str] | None = None
) -> str:
    """What differs between the tensors a module has and those a file holds (names, shapes,
    dtypes), as one sentence; ``""`` when they agree. ``aliases`` maps a tensor's other names
    (tied weights, stored once) to the name they share storage with: either may be present."""
    aliases = aliases or {}
    problems = []
    for name, (shape, dtype) in found.items():
        if name not in expected:
            continue
        want_shape, want_dtype = expected[name]
        if (shape, dtype) != (want_shape, want_dtype):
            problems.append(
                f"tensor {name!r} is {list(shape)} {dtype}, the spec's module has "
                f"{list(want_shape)} {want_dtype}"
            )
    groups: dict[str, list[str]] = {}
    for name in expected:
        groups.setdefault(aliases.get(name, name), []).append(name)
    missing = [names[0] for names in groups.values() if not found.keys() & set(names)]
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:5])}")
    unexpected = [name for name in found if name not in expected]
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {', '.join(unexpected[:5])}")
    if len(problems) > 6:
        problems[5:] = [f"and {len(problems) - 5} more"]
    return "; ".join(problems)


def tensor_table(tensors: Mapping[str, Tensor]) -> TensorTable:
    """Name -> (shape, dtype name) of a state dict, as ``read_safetensors_header`` gives them."""
    return {
        name: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in tensors.items()
    }


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """Each tensor name sharing its tensor with an earlier name (tied weights) -> that first
    name."""
    first: dict[int, str] = {}
    out = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        out[name] = first.setdefault(id(tensor), name)
    return {name: root for name, root in out.items() if name != root}


# -------------------------------------------------------------------------------- reporting


def _unique_tensors(model: nn.Module) -> list[Tensor]:
    seen: set[int] = set()
    out = []
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _attentions_of(stack: nn.Module, start: int, end: int) -> list[nn.Module]:
    found = []
    for layer in list(stack.layers)[start : end + 1]:  # type: ignore[arg-type]
        found.append(layer.attention)
        if layer.cross_attention is not None:
            found.append(layer.cross_attention)
    return found


def _kernel_of(model: CompiledModel, graph: Graph, node_id: str) -> tuple[str, str] | None:
    attrs = graph.expanded.nodes[node_id]
    if attrs["op"] not in ("encoder", "decoder"):
        return None
    info = graph.nodes[attrs["spec_id"]]
    assert info.stack is not None
    start, end = attrs.get("layers", (0, len(info.stack.layers) - 1))
    stack = getattr(model, attrs["spec_id"])
    choices: dict[tuple[str, str], int] = {}
    for attn in _attentions_of(stack, start, end):
        choice: KernelChoice = _choice(attn)
        choices[(choice.name, choice.reason)] = choices.get((choice.name, choice.reason), 0) + 1
    names = ", ".join(f"{n} x{c}" if len(choices) > 1 else n for (n, _), c in choices.items())
    reasons = "; ".join(dict.fromkeys(r for (_, r) in choices))
    return names, reasons


def _choice(attn: nn.Module) -> KernelChoice:
    if isinstance(attn, LinearAttention):
        return KernelChoice("linear", "linear attention: phi(Q) (phi(K)^T V), linear in length")
    assert isinstance(attn, Attention)
    return attn.kernel


def _kernel_table(model: CompiledModel) -> list[dict[str, str]]:
    rows: dict[tuple[str, str, str], list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, Attention | LinearAttention):
            choice = _choice(module)
            rows.setdefault((name.split(".")[0], choice.name, choice.reason), []).append(name)
    return [
        {"node": node, "kernel": kernel, "reason": reason, "layers": str(len(names))}
        for (node, kernel, reason), names in rows.items()
    ]


__all__ = ["CompiledModel", "compile_spec", "load_compiled", "resolve_dtype", "tied_aliases"]
