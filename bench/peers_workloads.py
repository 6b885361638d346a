"""The workloads of ``bench/peers.py``: each an archlab model and its peer with the same weights.

A ``Workload`` names a spec and a peer of the same shape; ``build_pair`` builds both in float32,
copies archlab's (seeded, random) weights into the peer, checks that the two compute the same
outputs, and (with ``freeze``) adds a frozen copy of the archlab model, checked the same way. See
``bench/peers.py`` for the workloads and how they are timed.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.compiler import compile_spec
from compile_bench import encoder_spec, spec_dict, without_head

Inputs = dict[str, Tensor]

MAX_SEQ = {"bert-base": 512, "gpt2-small": 1024}  # the specs' (and peers') position tables
TOLERANCE = 1e-4  # float32 agreement, relative to max(1, the peer output's largest magnitude)

# --------------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    needs: str | None  # the peer's package, or None
    kind: str  # "image", "text" or "features": what the inputs are
    unit: str  # what the throughput columns count
    cpu: tuple[int, int]  # default (batch, seq) on the CPU
    cuda: tuple[int, int]  # default (batch, seq) on CUDA
    cuda_train_batch: int | None = None  # a smaller batch for training on CUDA


WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in [
        Workload(
            "vit-s16",
            "ViT-S/16 (deit-small-16)",
            "timm",
            "image",
            "img/s",
            (8, 197),
            (256, 197),
            128,
        ),
        Workload(
            "vit-b16", "ViT-B/16 (vit-base-16)", "timm", "image", "img/s", (8, 197), (256, 197), 128
        ),
        Workload(
            "bert-base", "BERT-base body", "transformers", "text", "tok/s", (8, 128), (32, 512)
        ),
        Workload(
            "gpt2-small",
            "GPT-2 small (LM head)",
            "transformers",
            "text",
            "tok/s",
            (8, 128),
            (16, 1024),
        ),
        Workload(
            "encoder-deit-s", "DeiT-S encoder", None, "features", "seq/s", (8, 197), (256, 197)
        ),
        Workload(
            "encoder-bert", "BERT-base encoder", None, "features", "seq/s", (8, 128), (32, 512)
        ),
    ]
}


@dataclass
class Pair:
    """An archlab model and its peer, with how to feed them and score a training step."""

    peer_label: str
    ours: nn.Module
    peer: nn.Module
    make_inputs: Callable[[int, int], Inputs]  # (batch, seq) -> inputs on the device
    call_ours: Callable[[nn.Module, Inputs], Tensor]
    call_peer: Callable[[nn.Module, Inputs], Tensor]
    loss: Callable[[Tensor, Inputs], Tensor]
    match: str = "not checked"
    #: with ``freeze``: a frozen copy of ``ours`` (``CompiledModel.freeze()``), its outputs
    #: checked against the peer's like ``ours``, and its ``FreezeReport`` as a dict
    frozen: nn.Module | None = None
    frozen_match: str = ""
    frozen_report: dict[str, Any] | None = None
    #: no peer could be built: ``peer`` is ``ours`` (the frozen copy's reference), not timed
    peerless: bool = False


def peer_version(package: str) -> tuple[str | None, str]:
    """(version, note): the version when ``package`` imports, else None and why not."""
    try:
        module = importlib.import_module(package)
    except Exception as exc:  # timm raises RuntimeError when torchvision does not match torch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"{package} does not import ({type(exc).__name__}: {first})"
    return str(getattr(module, "__version__", "?")), ""


def classify_loss(out: Tensor, inputs: Inputs) -> Tensor:
    return F.cross_entropy(out.float(), inputs["labels"])


def lm_loss(out: Tensor, inputs: Inputs) -> Tensor:
    ids = inputs["ids"]
    return F.cross_entropy(out[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def hidden_loss(out: Tensor, inputs: Inputs) -> Tensor:
    return F.mse_loss(out.float(), inputs["target"])


def call_x(model: nn.Module, inputs: Inputs) -> Tensor:
    out: Tensor = model(inputs["x"])
    return out


def call_ids(model: nn.Module, inputs: Inputs) -> Tensor:
    out: Tensor = model(inputs["ids"])  # a spec with a pad_id makes its own padding mask
    return out


def call_hf_bert(model: nn.Module, inputs: Inputs) -> Tensor:
    out: Tensor = model(input_ids=inputs["ids"], attention_mask=inputs["mask"]).last_hidden_state
    return out


def call_hf_gpt2(model: nn.Module, inputs: Inputs) -> Tensor:
    out: Tensor = model(input_ids=inputs["ids"], use_cache=False).logits
    return out


Call = Callable[[nn.Module, Inputs], Tensor]
# (archlab call, peer call, training loss) by workload kind, or by key for the text workloads
CALLS: dict[str, tuple[Call, Call, Callable[[Tensor, Inputs], Tensor]]] = {
    "image": (call_x, call_x, classify_loss),
    "features": (call_x, call_x, hidden_loss),
    "bert-base": (call_ids, call_hf_bert, hidden_loss),
    "gpt2-small": (call_ids, call_hf_gpt2, lm_loss),
}


def copy_weights(peer: nn.Module, weights: dict[str, Tensor], allowed_missing: set[str]) -> None:
    """Load ``weights`` (peer names) into ``peer``; every other peer tensor must be allowed."""
    result = peer.load_state_dict(weights, strict=False)
    missing = set(result.missing_keys) - allowed_missing
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"weight copy into {type(peer).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def block_weights(
    sd: dict[str, Tensor], src: str, dst: str, names: dict[str, str], transpose: bool = False
) -> dict[str, Tensor]:
    """Rename the tensors of archlab's ``{src}.{i}.*`` blocks to the peer's ``{dst}.{i}.*``."""
    out = {}
    for key, value in sd.items():
        if not key.startswith(src + "."):
            continue
        index, rest = key[len(src) + 1 :].split(".", 1)
        part, kind = rest.rsplit(".", 1)
        if part not in names:
            continue
        peer_key = f"{dst}.{index}.{names[part]}.{kind}"
        out[peer_key] = value.t() if transpose and kind == "weight" and value.dim() == 2 else value
    return out


VIT = {  # workload -> (archlab spec, timm model, its stochastic depth)
    "vit-s16": ("deit-small-16", "vit_small_patch16_224", 0.1),
    "vit-b16": ("vit-base-16", "vit_base_patch16_224", 0.0),
}


def build_ours(w: Workload, device: str, seq: int) -> nn.Module:
    """The archlab model of ``w`` alone, as the builders below make it (seed 0)."""
    if w.kind == "image":
        return compile_spec(spec_dict(VIT[w.key][0]), device=device, seed=0)
    if w.key == "bert-base":
        return compile_spec(without_head("bert-base", "head", "encoder"), device=device, seed=0)
    if w.key == "gpt2-small":
        return compile_spec(spec_dict("gpt2-small"), device=device, seed=0)
    return build_encoder(w, device, seq)[0]


def build_vit(w: Workload, device: str) -> tuple[nn.Module, nn.Module, str]:
    import timm

    stem, name, drop_path = VIT[w.key]
    ours = compile_spec(spec_dict(stem), device=device, seed=0)
    peer = timm.create_model(name, pretrained=False, drop_path_rate=drop_path).to(device)
    sd = ours.state_dict()
    weights = {
        "patch_embed.proj.weight": sd["patches.proj.weight"],
        "patch_embed.proj.bias": sd["patches.proj.bias"],
        "cls_token": sd["cls.tokens"],
        "pos_embed": sd["pos.weight"][None],
        "norm.weight": sd["norm.weight"],
        "norm.bias": sd["norm.bias"],
        "head.weight": sd["head.fc.weight"],
        "head.bias": sd["head.fc.bias"],
    }
    weights |= block_weights(
        sd,
        "encoder.layers",
        "blocks",
        {
            "norm1": "norm1",
            "attention.qkv": "attn.qkv",
            "attention.out": "attn.proj",
            "norm2": "norm2",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
        },
    )
    copy_weights(peer, weights, set())
    return ours, peer, f"timm {name}"


def build_bert(device: str) -> tuple[nn.Module, nn.Module, str]:
    import transformers

    ours = compile_spec(without_head("bert-base", "head", "encoder"), device=device, seed=0)
    config = transformers.BertConfig(attn_implementation="sdpa")
    peer = transformers.BertModel(config, add_pooling_layer=False).to(device)
    sd = ours.state_dict()
    weights = {
        "embeddings.word_embeddings.weight": sd["tok.weight"],
        "embeddings.position_embeddings.weight": sd["pos.weight"],
        # the spec has no segment embeddings: HF adds row 0 of its table, zeroed here
        "embeddings.token_type_embeddings.weight": torch.zeros_like(
            peer.embeddings.token_type_embeddings.weight
        ),
        "embeddings.LayerNorm.weight": sd["emb_norm.weight"],
        "embeddings.LayerNorm.bias": sd["emb_norm.bias"],
    }
    layers = block_weights(
        sd,
        "encoder.layers",
        "encoder.layer",
        {
            "attention.out": "attention.output.dense",
            "norm1": "attention.output.LayerNorm",
            "mlp.fc1": "intermediate.dense",
            "mlp.fc2": "output.dense",
            "norm2": "output.LayerNorm",
        },
    )
    for i in range(config.num_hidden_layers):  # archlab's fused qkv: queries, keys, values
        for kind in ("weight", "bias"):
            q, k, v = sd[f"encoder.layers.{i}.attention.qkv.{kind}"].chunk(3, dim=0)
            for name, part in (("query", q), ("key", k), ("value", v)):
                layers[f"encoder.layer.{i}.attention.self.{name}.{kind}"] = part
    copy_weights(peer, weights | layers, set())
    return ours, peer, "HF BertModel (sdpa)"


def build_gpt2(device: str) -> tuple[nn.Module, nn.Module, str]:
    import transformers

    ours = compile_spec(spec_dict("gpt2-small"), device=device, seed=0)
    config = transformers.GPT2Config(attn_implementation="sdpa")
    peer = transformers.GPT2LMHeadModel(config).to(device)
    sd = ours.state_dict()
    weights = {
        "transformer.wte.weight": sd["tok.weight"],  # lm_head.weight is tied to it
        "transformer.wpe.weight": sd["pos.weight"],
        "transformer.ln_f.weight": sd["norm.weight"],
        "transformer.ln_f.bias": sd["norm.bias"],
    }
    weights |= block_weights(  # HF's Conv1D keeps its weight as (in, out): transposed
        sd,
        "decoder.layers",
        "transformer.h",
        {
            "norm1": "ln_1",
            "attention.qkv": "attn.c_attn",
            "attention.out": "attn.c_proj",
            "norm2": "ln_2",
            "mlp.fc1": "mlp.c_fc",
            "mlp.fc2": "mlp.c_proj",
        },
        transpose=True,
    )
    copy_weights(peer, weights, {"lm_head.weight"})
    if peer.lm_head.weight.data_ptr() != peer.transformer.wte.weight.data_ptr():
        raise RuntimeError("HF GPT-2's lm_head is not tied to its token embedding")
    return ours, peer, "HF GPT2LMHeadModel (sdpa)"


def deit_encoder_spec(seq: int) -> dict[str, Any]:
    """The DeiT-S encoder node alone over feature inputs (stochastic depth off, as the peer)."""
    node = copy.deepcopy(spec_dict("deit-small-16")["nodes"]["encoder"])
    node["input"] = "x"
    node["block"].pop("drop_path", None)
    return {
        "version": 1,
        "name": "deit-small-16-encoder",
        "inputs": {"x": {"kind": "features", "dim": 384, "max_len": seq}},
        "nodes": {"encoder": node},
        "outputs": "encoder",
    }


def build_encoder(w: Workload, device: str, seq: int) -> tuple[nn.Module, nn.Module, str]:
    if w.key == "encoder-deit-s":
        spec, (layers, dim, heads, eps, norm_first) = (
            deit_encoder_spec(seq),
            (12, 384, 6, 1e-6, True),
        )
    else:
        layers, dim, heads, eps, norm_first = 12, 768, 12, 1e-12, False
        spec = encoder_spec(layers, dim, heads, seq, eps)
    ours = compile_spec(spec, device=device, seed=0)
    layer = nn.TransformerEncoderLayer(
        dim,
        heads,
        4 * dim,
        dropout=0.0,
        activation="gelu",
        layer_norm_eps=eps,
        batch_first=True,
        norm_first=norm_first,
    )
    with warnings.catch_warnings():  # nested tensors are off with norm_first; no padding here
        warnings.simplefilter("ignore", UserWarning)
        peer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=True).to(device)
    names = {
        "attention.qkv": "self_attn.in_proj",
        "attention.out": "self_attn.out_proj",
        "norm1": "norm1",
        "norm2": "norm2",
        "mlp.fc1": "linear1",
        "mlp.fc2": "linear2",
    }
    weights = {}
    for key, value in block_weights(ours.state_dict(), "encoder.layers", "layers", names).items():
        # nn.MultiheadAttention names its fused projection in_proj_weight / in_proj_bias
        weights[
            key.replace("in_proj.weight", "in_proj_weight").replace("in_proj.bias", "in_proj_bias")
        ] = value
    copy_weights(peer, weights, set())
    return ours, peer, f"nn.TransformerEncoder (fast path, norm_first={norm_first})"


def build_pair(
    w: Workload,
    args: argparse.Namespace,
    seq: int,
    freeze: bool = False,
    peerless: str | None = None,
) -> Pair:
    """Both models in float32 with the same weights, checked, then cast to the run's dtype.

    ``freeze``: also a frozen copy of the archlab model (``CompiledModel.freeze()``, with
    ``--compile`` inductor's freezing instead of the eager packing), checked against the peer.
    ``peerless``: why the peer cannot be built (its package does not import); the archlab model
    then stands in as the "peer" the frozen copy is checked against, and is not timed as one."""
    device, dtype = args.device, args.weight_dtype
    if peerless is not None:
        ours = build_ours(w, device, seq)
        peer, peer_label = ours, f"none: {peerless}"
    elif w.kind == "image":
        ours, peer, peer_label = build_vit(w, device)
    elif w.key == "bert-base":
        ours, peer, peer_label = build_bert(device)
    elif w.key == "gpt2-small":
        ours, peer, peer_label = build_gpt2(device)
    else:
        ours, peer, peer_label = build_encoder(w, device, seq)
    in_dtype = dtype if not args.autocast else torch.float32
    gen = torch.Generator().manual_seed(0)

    def make_inputs(batch: int, length: int, float_dtype: torch.dtype = in_dtype) -> Inputs:
        if w.kind == "image":
            x = torch.randn(batch, 3, 224, 224, generator=gen)
            labels = torch.randint(0, 1000, (batch,), generator=gen)
            return {"x": x.to(device, float_dtype), "labels": labels.to(device)}
        if w.kind == "text":
            vocab = 30522 if w.key == "bert-base" else 50257
            ids = torch.randint(1, vocab, (batch, length), generator=gen).to(device)
            target = torch.randn(batch, length, 768, generator=gen).to(device)
            return {"ids": ids, "mask": ids != 0, "target": target}
        dim = 384 if w.key == "encoder-deit-s" else 768
        x = torch.randn(batch, length, dim, generator=gen).to(device, float_dtype)
        return {"x": x, "target": torch.randn(batch, length, dim, generator=gen).to(device)}

    call_ours, call_peer, loss = CALLS[w.kind if w.kind != "text" else w.key]
    if peerless is not None:
        call_peer = call_ours
    pair = Pair(peer_label, ours, peer, make_inputs, call_ours, call_peer, loss)
    pair.peerless = peerless is not None
    pair.match = "no peer" if pair.peerless else check_outputs(pair, ours, min(seq, 64))
    if dtype != torch.float32:  # archlab's own build in the run's dtype: same seed, same weights
        pair.ours = compile_spec(ours.spec, device=device, dtype=dtype, seed=0)
    if freeze:  # checked against the peer while it is still in float32
        pair.frozen = frozen_copy(ours, pair.ours, args)
        pair.frozen_match = check_outputs(pair, pair.frozen, min(seq, 64))
        if pair.peerless:
            pair.frozen_match = f"against archlab unfrozen: {pair.frozen_match}"
        pair.frozen_report = pair.frozen.frozen.to_dict()
    if not pair.peerless:
        pair.peer.to(dtype)
    del ours, peer
    return pair


def frozen_copy(float32: Any, run: Any, args: argparse.Namespace) -> Any:
    """A frozen copy of the archlab model: of the float32 build (which ``freeze()`` casts to
    bfloat16 itself on CUDA), or on the CPU of the build in the run's dtype."""
    source = float32 if args.device == "cuda" or run is float32 else run
    return copy.deepcopy(source).freeze(compile=True if args.compile else None)


def check_outputs(pair: Pair, model: nn.Module, seq: int) -> str:
    """Run ``model`` (archlab's, in float32 unless frozen on CUDA) and the peer (float32) in eval
    on a small input; 'outputs match' or the largest difference."""
    inputs = pair.make_inputs(2, seq, torch.float32)
    weights = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    own = {k: v.to(weights) if v.is_floating_point() else v for k, v in inputs.items()}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        if getattr(model, "frozen", None) is None:
            model.eval()
        pair.peer.eval()
        with torch.inference_mode():
            a = pair.call_ours(model, own).float()
            b = pair.call_peer(pair.peer, inputs).float()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    if a.shape != b.shape:
        return f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a - b).abs().max().item()
    scale = max(1.0, b.abs().max().item())
    if weights != torch.float32:  # no float32 agreement to claim: say by how much they differ
        return f"{str(weights).removeprefix('torch.')}: max diff {diff:.2e} (scale {scale:.2g})"
    if diff <= TOLERANCE * scale:
        return f"outputs match ({diff:.1e})"
    return f"max diff {diff:.2e} (scale {scale:.2g})"
