"""Analysed graph -> ``nn.Module``.

Each spec node becomes a submodule named after its id, so state-dict keys read like the spec
(``encoder.layers.3.attention.qkv.weight``). ``forward`` is generated Python source (shown by
``arch compile --show-code``): one line per node in topological order, padding masks carried
beside the values, no dictionaries or loops over the graph at run time, so ``torch.compile`` and
``torch.export`` see straight-line code.
"""

from __future__ import annotations

import json
import linecache
import os
import stat
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from archlab.compiler.devices import resolve_device
from archlab.compiler.memory import ModelTooLargeError, check_build
from archlab.compiler.nn.attention import (
    KERNELS,
    Attention,
    KernelChoice,
    choose_kernel,
    kernel_problem,
)
from archlab.compiler.nn.bias import RelativePositionBias
from archlab.compiler.nn.block import Block
from archlab.compiler.nn.combine import Add, Concat
from archlab.compiler.nn.embeddings import ClsToken, PatchEmbedding, TokenEmbedding
from archlab.compiler.nn.heads import Classify, LMHead, Pool
from archlab.compiler.nn.linear_attention import LinearAttention
from archlab.compiler.nn.masks import MaskPattern
from archlab.compiler.nn.mlp import Mlp
from archlab.compiler.nn.norms import make_norm
from archlab.compiler.nn.positions import LearnedPosition, SinCos2dPosition, SinusoidalPosition
from archlab.compiler.nn.prune import (
    AttentionTopK,
    DynamicPrune,
    TokenMerge,
    TokenState,
    TokenTrace,
)
from archlab.compiler.nn.rotary import RotaryEmbedding
from archlab.compiler.nn.stack import Stack
from archlab.compiler.paths import performance_paths
from archlab.compiler.pruning import dense_flops, pruning_stages
from archlab.compiler.summary import Summary, build_rows, shape_list
from archlab.errors import UserInputError
from archlab.specs import SpecError, canonical_form, canonical_json, load_spec, spec_hash
from archlab.specs.analysis import (
    PASS_THROUGH_OPS,
    AttentionPlan,
    ClassifyPlan,
    EmbedPlan,
    Graph,
    ImageShape,
    LayerPlan,
    LMHeadPlan,
    PoolPlan,
    PositionPlan,
    PruneStage,
    SeqShape,
    StackPlan,
    TokensShape,
    VecShape,
    analyze,
    has_pruning,
    prune_methods,
    upstream_through,
)
from archlab.specs.load import SpecSource, parse_json
from archlab.specs.models import (
    BlockLocalMask,
    ClassifyNode,
    ConcatNode,
    DropoutNode,
    EmbedNode,
    Mask,
    NormNode,
    PatchEmbedNode,
    PositionNode,
    PrefixMask,
    RelativeBias,
    Rotary,
    SlidingWindowMask,
    Spec,
)

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


class CompileError(UserInputError):
    """A valid spec that this build of archlab cannot turn into a module (yet), or bad options."""


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
        tensors = _unshared_state(self)
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


def _unshared_state(model: nn.Module) -> dict[str, Tensor]:
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
    """
    spec = load_spec(spec)
    graph = analyze(spec)
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device) if device is not None else torch.device("cpu")
    check_build(graph, dev, torch_dtype, max_params)
    if seed is not None:
        torch.manual_seed(seed)
    builder = _Builder(graph, dev, torch_dtype, attention_kernel)
    model_cls, code = _generate_forward(spec, graph)
    model = model_cls()
    model.spec, model.graph, model.code = spec, graph, code
    for node_id in graph.order:
        model.add_module(node_id, builder.build(node_id))
    return model.to(device=dev, dtype=torch_dtype) if torch_dtype is not None else model.to(dev)


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
    problems = tensor_mismatches(expected_tensors, tensors, _aliases(expected))
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


def _aliases(model: nn.Module) -> dict[str, str]:
    """Each tensor name sharing its tensor with an earlier name -> that first name."""
    first: dict[int, str] = {}
    out = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        out[name] = first.setdefault(id(tensor), name)
    return {name: root for name, root in out.items() if name != root}


# --------------------------------------------------------------------------------- the builder


class _Builder:
    """Turns each analysed node into its module (torchtune-style: build parts, then assemble)."""

    def __init__(
        self, graph: Graph, device: torch.device, dtype: torch.dtype | None, kernel: str | None
    ) -> None:
        self.graph = graph
        self.device = device
        self.dtype = dtype
        self.kernel_override = kernel
        self.built: dict[str, nn.Module] = {}

    def build(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        make: Callable[[str], nn.Module] = getattr(self, f"_build_{info.op}")
        module = make(node_id)
        self.built[node_id] = module
        return module

    def _build_embed(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        node: EmbedNode = info.spec
        plan = info.plan_as(EmbedPlan)
        module = TokenEmbedding(plan.vocab, plan.dim, scale=node.scale)
        if node.tie is not None:
            root = self.built[plan.tie_root]
            assert isinstance(root, TokenEmbedding)
            module.weight = root.weight  # shared: the state dict stores it once per name
        return module

    def _build_patch_embed(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        node: PatchEmbedNode = info.spec
        image = self.graph.shape(node.input)
        assert isinstance(image, ImageShape)
        return PatchEmbedding(image.channels, node.dim, *node.patch_size)

    def _build_cls_token(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        return ClsToken(info.spec.count, _dim(info.shape))

    def _build_position(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        node: PositionNode = info.spec
        seq = info.shape
        assert isinstance(seq, SeqShape)
        if node.encoding == "learned":
            return LearnedPosition(info.plan_as(PositionPlan).max_len, seq.dim)
        if node.encoding == "sinusoidal":
            return SinusoidalPosition(info.plan_as(PositionPlan).max_len, seq.dim)
        assert seq.grid is not None
        return SinCos2dPosition(seq.grid[0], seq.grid[1], seq.dim, n_cls=seq.n_cls)

    def _build_encoder(self, node_id: str) -> nn.Module:
        return self._build_stack(node_id)

    def _build_decoder(self, node_id: str) -> nn.Module:
        return self._build_stack(node_id)

    def _build_stack(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        plan = info.stack
        assert plan is not None
        # the longest input the stack sees: in training a dynamic stage upstream keeps every token
        source = self.graph.shape(info.inputs[0])
        assert isinstance(source, SeqShape)
        max_len = source.max_length
        layers = [self._build_layer(plan, layer, max_len) for layer in plan.layers]
        relative = None
        uses = None
        if plan.relative_bias is not None:
            assert plan.relative_bias_heads is not None
            rb = plan.relative_bias
            relative = RelativePositionBias(
                plan.relative_bias_heads, rb.buckets, rb.max_distance, bidirectional=not plan.causal
            )
            uses = [isinstance(layer.attention.position, RelativeBias) for layer in plan.layers]
        stages = {
            layer.index: prune_stage(layer.prune, f"{node_id}.prune.{layer.index}")
            for layer in plan.layers
            if layer.prune is not None
        }
        return Stack(layers, relative_bias=relative, relative_bias_layers=uses, stages=stages)

    def _build_layer(self, plan: StackPlan, layer: LayerPlan, max_len: int) -> Block:
        block = layer.block
        D = plan.dim
        attention = self._attention(layer.attention, max_len)
        cross = norm_cross = None
        if layer.cross_attention is not None:
            assert plan.memory_shape is not None
            memory_len = plan.memory_shape.max_length
            cross = self._attention(layer.cross_attention, max(max_len, memory_len))
            norm_cross = make_norm(block.norm.kind, D, block.norm.eps)
        mlp = Mlp(
            D, layer.hidden, block.mlp.activation, bias=block.mlp.bias, dropout=block.mlp.dropout
        )
        return Block(
            attention,
            mlp,
            make_norm(block.norm.kind, D, block.norm.eps),
            make_norm(block.norm.kind, D, block.norm.eps),
            cross_attention=cross,
            norm_cross=norm_cross,
            placement=block.norm.placement,
            dropout=block.dropout,
            drop_path=layer.drop_path,
            layer_scale=block.layer_scale,
            dim=D,
        )

    def _attention(self, plan: AttentionPlan, max_len: int) -> nn.Module:
        mask = mask_pattern(plan.mask)
        shared: dict[str, Any] = {
            "kv_heads": plan.kv_heads,
            "head_dim": plan.head_dim,
            "kv_dim": plan.kv_dim,
            "bias": plan.bias,
            "qk_norm": plan.norm_kind if plan.qk_norm else None,
            "eps": plan.norm_eps,
            "dropout": plan.dropout,
        }
        if plan.kind == "linear":
            return LinearAttention(
                plan.dim, plan.heads, feature_map=plan.feature_map, causal=mask.causal, **shared
            )
        position = plan.position.kind if plan.position is not None else None
        kernel = choose_kernel(
            kind=plan.kind,
            mask=mask,
            position=position,
            device=self.device,
            dtype=self.dtype,
            has_dropout=plan.dropout > 0,
            override=self._override(mask, position, plan.dropout > 0),
        )
        rotary = None
        if isinstance(plan.position, Rotary):
            rotary = RotaryEmbedding(
                plan.head_dim, max_len, base=plan.position.base, fraction=plan.position.fraction
            )
        return Attention(
            plan.dim,
            plan.heads,
            mask=mask,
            rotary=rotary,
            alibi=position == "alibi",
            relative_bias=position == "relative_bias",
            max_len=max_len,
            kernel=kernel,
            **shared,
        )

    def _override(self, mask: MaskPattern, position: str | None, dropout: bool) -> str | None:
        """The forced kernel where it can run this attention, else None (the automatic choice)."""
        wanted = self.kernel_override
        if wanted is None:
            return None
        if wanted not in KERNELS:
            raise CompileError(
                f"unknown attention kernel {wanted!r}; choose one of {', '.join(KERNELS)}"
            )
        problem = kernel_problem(wanted, mask=mask, position=position, has_dropout=dropout)  # type: ignore[arg-type]
        return None if problem is not None else wanted

    def _build_token_prune(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        assert info.prune is not None
        return prune_stage(info.prune, node_id)

    def _build_norm(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        node: NormNode = info.spec
        return make_norm(node.kind, _dim(info.shape), node.eps)

    def _build_pool(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        plan = info.plan_as(PoolPlan)
        return Pool(plan.mode, plan.n_cls)

    def _build_classify(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        node: ClassifyNode = info.spec
        plan = info.plan_as(ClassifyPlan)
        return Classify(plan.in_dim, node.classes, plan.mode, plan.n_cls)

    def _build_lm_head(self, node_id: str) -> nn.Module:
        info = self.graph.nodes[node_id]
        plan = info.plan_as(LMHeadPlan)
        tied = self.built[plan.tie_root] if plan.tie_root is not None else None
        assert tied is None or isinstance(tied, TokenEmbedding)
        return LMHead(plan.in_dim, plan.vocab, tied)

    def _build_add(self, node_id: str) -> nn.Module:
        return Add()

    def _build_concat(self, node_id: str) -> nn.Module:
        node: ConcatNode = self.graph.nodes[node_id].spec
        return Concat(node.axis)

    def _build_dropout(self, node_id: str) -> nn.Module:
        node: DropoutNode = self.graph.nodes[node_id].spec
        return nn.Dropout(node.p)


def prune_stage(stage: PruneStage, name: str) -> nn.Module:
    """The module of one analysed pruning stage; ``name`` labels its records in a trace."""
    if stage.method == "dynamic":
        assert stage.keep is not None
        return DynamicPrune(stage.dim, stage.keep, stage.n_cls, name)
    if stage.method == "attention_topk":
        assert stage.keep is not None
        return AttentionTopK(stage.keep, stage.n_cls, stage.fuse, name)
    assert stage.r is not None
    return TokenMerge(stage.r, stage.n_cls, name)


def mask_pattern(mask: Mask) -> MaskPattern:
    """The spec's resolved mask as the attention layer's ``MaskPattern``."""
    if isinstance(mask, SlidingWindowMask):
        return MaskPattern("sliding_window", causal=bool(mask.causal), window=mask.window)
    if isinstance(mask, BlockLocalMask):
        return MaskPattern("block_local", causal=bool(mask.causal), block=mask.block)
    if isinstance(mask, PrefixMask):
        return MaskPattern("prefix", prefix_len=mask.prefix_len)
    return MaskPattern(mask.kind)


def _dim(shape: Any) -> int:
    assert isinstance(shape, SeqShape | VecShape)
    return shape.dim


# ------------------------------------------------------------------------------------- codegen


def _generate_forward(spec: Spec, graph: Graph) -> tuple[type[CompiledModel], str]:
    """Write ``forward`` as Python source, one statement per node, and make a class around it."""
    lines: list[str] = []
    seq_inputs = [
        n for n, i in graph.nodes.items() if i.op == "input" and not isinstance(i.shape, ImageShape)
    ]
    names = list(spec.inputs)
    pruned = has_pruning(graph)
    trace_param = ["*", "__trace=False"] if pruned else []
    params = ", ".join(
        names + [f"{n}_mask: Tensor | None = None" for n in seq_inputs] + trace_param
    )
    lines.append(f"def forward(self, {params}):")
    mask_of: dict[str, str] = {}
    for name in names:
        shape = graph.shape(name)
        if isinstance(shape, TokensShape):
            lines.append(f"    __check_tokens({name}, {name!r}, {shape.length}, {name}_mask)")
            if shape.pad_id is not None:
                lines.append(f"    {name}_mask = __pad_mask({name}, {shape.pad_id}, {name}_mask)")
            mask_of[name] = f"{name}_mask"
        elif isinstance(shape, ImageShape):
            lines.append(
                f"    __check_image({name}, {name!r}, ({shape.channels}, {shape.height}, {shape.width}))"
            )
            mask_of[name] = "None"
        else:
            assert isinstance(shape, SeqShape)
            lines.append(
                f"    __check_features({name}, {name!r}, {shape.length}, {shape.dim}, {name}_mask)"
            )
            mask_of[name] = f"{name}_mask"
    value_of = {name: name for name in names}
    state_of = {name: "None" for name in names}  # each sequence's pruning state, if it has one
    needs = _attention_needs(graph)
    traced: dict[str, tuple[str, str]] = {}  # node -> (value, state) variables, for the trace
    for node_id in graph.order:
        info = graph.nodes[node_id]
        v, m, st = f"__v_{node_id}", f"__m_{node_id}", f"__s_{node_id}"
        ins = [value_of[r] for r in info.inputs]
        ms = [mask_of[r] for r in info.inputs]
        state_in = state_of[info.inputs[0]] if info.inputs else "None"
        call = f"self.{node_id}"
        lines.append(f"    # {node_id}: {info.op} -> {info.shape}")
        op = info.op
        state_of[node_id] = "None"
        if op in ("embed", "patch_embed", "position", "norm", "lm_head", "dropout"):
            lines.append(f"    {v} = {call}({ins[0]})")
            mask_of[node_id] = ms[0]
            if op in PASS_THROUGH_OPS:  # per-token maps keep the pruning state
                state_of[node_id] = state_in
        elif op == "cls_token":
            lines.append(f"    {v}, {m} = {call}({ins[0]}, {ms[0]})")
            mask_of[node_id] = m
        elif op in ("encoder", "decoder"):
            extra = ""
            if info.stack is not None and info.stack.memory is not None:
                mem = info.stack.memory
                extra = f", memory={value_of[mem]}, memory_mask={mask_of[mem]}"
            stack_prunes = bool(prune_methods(info))
            if stack_prunes or state_in != "None" or node_id in needs:
                need = repr(needs.get(node_id))
                lines.append(
                    f"    {v}, {m}, {st}, __a_{node_id} = {call}.forward_tokens({ins[0]}, "
                    f"{ms[0]}{extra}, state={state_in}, trace=__trace, need={need})"
                )
                mask_of[node_id], state_of[node_id] = m, st
                traced[node_id] = (v, st)
            else:
                lines.append(f"    {v} = {call}({ins[0]}, {ms[0]}{extra})")
                mask_of[node_id] = ms[0]
        elif op == "token_prune":
            attention = ""
            if info.spec.method in ("attention_topk", "merge"):
                attention = f"__a_{_stack_behind(graph, info.inputs[0])}, "
            lines.append(
                f"    {v}, {m}, {st} = {call}({ins[0]}, {ms[0]}, {state_in}, {attention}__trace)"
            )
            mask_of[node_id], state_of[node_id] = m, st
            traced[node_id] = (v, st)
        elif op in ("pool", "classify"):
            if isinstance(graph.shape(info.inputs[0]), VecShape):
                lines.append(f"    {v} = {call}.fc({ins[0]})")
            elif state_in != "None":  # pool only the tokens a DynamicViT training policy keeps
                lines.append(f"    {v} = {call}({ins[0]}, __kept_mask({ms[0]}, {state_in}))")
            else:
                lines.append(f"    {v} = {call}({ins[0]}, {ms[0]})")
            mask_of[node_id] = "None"
        elif op in ("add", "concat"):
            lines.append(f"    {v}, {m} = {call}({', '.join(ins)}, masks=({', '.join(ms)},))")
            mask_of[node_id] = m
        else:
            raise CompileError(f"no code for op {op!r}")
        value_of[node_id] = v
    if len(spec.outputs) == 1:
        result = value_of[spec.outputs[0]]
    else:
        result = "{" + ", ".join(f"{o!r}: {value_of[o]}" for o in spec.outputs) + "}"
    if pruned:
        states = ", ".join(f"{n!r}: {s}" for n, (_, s) in traced.items())
        values = ", ".join(f"{n!r}: {val}" for n, (val, _) in traced.items())
        lines.append("    if __trace:")
        lines.append(f"        return {result}, ({{{states}}}, {{{values}}})")
    lines.append(f"    return {result}")
    source = "\n".join(lines) + "\n"
    filename = f"<archlab forward {spec.name or 'spec'} {spec_hash(spec)[:12]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = dict(_RUNTIME)
    exec(
        compile(source, filename, "exec"), namespace
    )  # our own generated code; ids are validated identifiers
    cls = type(
        f"Compiled_{_class_name(spec.name)}", (CompiledModel,), {"forward": namespace["forward"]}
    )
    return cls, source


def _stack_behind(graph: Graph, ref: str) -> str:
    """The encoder/decoder whose output reaches ``ref`` through norm and dropout nodes."""
    info = upstream_through(graph.nodes, ref)
    assert info is not None  # an analysed graph's references all resolve
    return info.id


def _attention_needs(graph: Graph) -> dict[str, str]:
    """Stacks whose last layer's attention a later ``token_prune`` node reads, and what of it."""
    needs = {}
    for info in graph.nodes.values():
        if info.op == "token_prune" and info.spec.method in ("attention_topk", "merge"):
            needs[_stack_behind(graph, info.inputs[0])] = (
                "cls" if info.spec.method == "attention_topk" else "keys"
            )
    return needs


def _class_name(name: str | None) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in (name or "spec"))
    return cleaned or "spec"


# ------------------------------------------------------------------------ run-time input checks


def _input_error(name: str, message: str) -> SpecError:
    return SpecError([(f"inputs.{name}", message)])


def _check_tokens(x: Tensor, name: str, max_len: int, mask: Tensor | None) -> None:
    if x.dim() != 2:
        raise _input_error(
            name, f"tokens input {name!r} must be (B, T), got shape {tuple(x.shape)}"
        )
    if x.dtype not in (torch.int64, torch.int32):
        raise _input_error(name, f"tokens input {name!r} must be int64 token ids, got {x.dtype}")
    if x.shape[1] > max_len:
        raise _input_error(
            name, f"input {name!r} has {x.shape[1]} tokens, more than max_len {max_len}"
        )
    _check_mask(mask, name, x.shape[0], x.shape[1])


def _check_features(x: Tensor, name: str, max_len: int, dim: int, mask: Tensor | None) -> None:
    if x.dim() != 3 or x.shape[2] != dim:
        raise _input_error(
            name, f"features input {name!r} must be (B, T, {dim}), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise _input_error(name, f"features input {name!r} must be floating point, got {x.dtype}")
    if x.shape[1] > max_len:
        raise _input_error(
            name, f"input {name!r} has {x.shape[1]} positions, more than max_len {max_len}"
        )
    _check_mask(mask, name, x.shape[0], x.shape[1])


def _check_image(x: Tensor, name: str, chw: tuple[int, int, int]) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != chw:
        raise _input_error(
            name,
            f"image input {name!r} must be (B, {', '.join(map(str, chw))}), got shape {tuple(x.shape)}",
        )
    if not x.is_floating_point():
        raise _input_error(name, f"image input {name!r} must be floating point, got {x.dtype}")


def _check_mask(mask: Tensor | None, name: str, B: int, T: int) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool or tuple(mask.shape) != (B, T):
        raise _input_error(
            name,
            f"{name}_mask must be a bool tensor of shape ({B}, {T}) (True = real token), got {mask.dtype} {tuple(mask.shape)}",
        )


def _pad_mask(ids: Tensor, pad_id: int, mask: Tensor | None) -> Tensor:
    real = ids != pad_id
    return real if mask is None else real & mask


def _kept_mask(mask: Tensor | None, state: TokenState | None) -> Tensor | None:
    """The padding mask less the tokens a DynamicViT training policy dropped (it keeps them in
    the sequence, where inference removes them)."""
    if state is None or state.policy is None:
        return mask
    kept = state.policy > 0
    return kept if mask is None else mask & kept


# Generated code names its own variables and helpers with a leading '__', which spec ids and
# input names may not have, so nothing a spec names can shadow them.
_RUNTIME: dict[str, Any] = {
    "Tensor": Tensor,
    "__check_tokens": _check_tokens,
    "__check_features": _check_features,
    "__check_image": _check_image,
    "__pad_mask": _pad_mask,
    "__kept_mask": _kept_mask,
}


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


__all__ = [
    "CompileError",
    "CompiledModel",
    "ModelTooLargeError",
    "compile_spec",
    "load_compiled",
    "mask_pattern",
]
