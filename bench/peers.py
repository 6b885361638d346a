"""archlab's compiled zoo specs against the models people would otherwise use, in one process.

    python bench/peers.py [--mode infer train] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--autocast] [--batch N] [--seq T] [--compile] [--only NAME ...] [--quick]
        [--iters N] [--warmup N] [--threads N] [--profile] [--json PATH]

Workloads (``--only`` picks some; each is an archlab spec and a peer of the same shape):

- ``vit-s16``: ``specs/deit-small-16.json`` against timm ``vit_small_patch16_224`` (with the
  spec's stochastic depth, ``drop_path_rate=0.1``);
- ``vit-b16``: ``specs/vit-base-16.json`` against timm ``vit_base_patch16_224``;
- ``bert-base``: ``specs/bert-base.json`` without its classifier against HF ``BertModel`` (sdpa, no
  pooler), both given the padding mask a tokenizer gives (all real tokens);
- ``gpt2-small``: ``specs/gpt2-small.json`` (with its tied LM head) against HF
  ``GPT2LMHeadModel`` (sdpa, ``use_cache=False``);
- ``encoder-deit-s``: the DeiT-S encoder stack alone (12 pre-norm layers of width 384, 6 heads,
  197 tokens, no stochastic depth) against ``nn.TransformerEncoder`` (``norm_first=True``);
- ``encoder-bert``: a BERT-base encoder stack (12 post-norm layers of width 768, 12 heads, no
  dropout) against ``nn.TransformerEncoder`` (``norm_first=False``).

The ``nn.TransformerEncoder`` peers are built with ``batch_first=True``, ``enable_nested_tensor``
and GELU, so in eval under ``torch.inference_mode`` they take PyTorch's fast path
(``torch._transformer_encoder_layer_fwd``). The timm rows need timm and a torchvision built for
the installed torch (install them yourself: pip would otherwise swap a CPU torch for a CUDA one),
the HF rows transformers (``pip install -e .[bench]``); a row whose peer does not import is
skipped with a note.

Weights: each peer gets the archlab model's (seeded, random) weights copied in, and the two are
run once in float32, eval, on a small input of the same kind; the ``outputs`` column says
``outputs match`` when the largest difference is within 1e-4 (relative to the output's scale),
else the difference. Only then are both cast to ``--dtype`` for timing.

Modes: ``infer`` times one forward call in eval under ``torch.inference_mode``; ``train`` one
training step in train mode (dropout and stochastic depth as each model has them): zero the
gradients, forward, a loss (cross-entropy on the classes or next tokens, mean squared error on
hidden states), backward, and an AdamW step (fused on CUDA); the same for the peer.

Timing: warm-up calls of both, then rounds that time one call of each, the order alternating from
round to round, so that a noisy, shared machine slows both alike; the table shows medians. On
CUDA each call is timed with CUDA events after a synchronisation. ``ratio`` is peer time over
archlab time (of the medians): above 1.0, archlab is faster. ``paired`` is the median over rounds
of the two calls' ratio within a round, which a machine that is busy for a while (other jobs)
disturbs less; ``spread`` is the larger of the two sides' (max - min) / median: a spread far
above 10% on the CPU says other processes were competing for the cores, and the medians (and
``ratio``) are unreliable where they differ from ``paired``.

Defaults: float32 on the CPU, bfloat16 weights (no autocast) on CUDA (``--autocast``: float32
weights under bfloat16 autocast, as some of the anchors). Sizes on the CPU: images batch 8,
text 8 x 128, encoders batch 8 (DeiT-S encoder 197 tokens); on CUDA those of
``../shared/anchors.md``: ViT batch 256 (128 for training), GPT-2 16 x 1024, DeiT-S encoder 256 x
197, BERT 32 x 512. ``--batch`` and ``--seq`` override every workload (images keep their 197
tokens). Calls: on the CPU 2 warm-up + 10 timed per model in inference, 2 + 6 in training; on
CUDA 10 + 30 and 5 + 20. ``--quick``: batch 2, sequences of 32, 1 + 2 calls (a smoke test).

The issue's CPU targets (float32 inference): every encoder spec at least 1.0x
``nn.TransformerEncoder`` with its fast path, and the GPT-2 spec at least 1.0x HF GPT-2.

Not a test: nothing here asserts a time. Results go to bench/RESULTS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import archlab
from archlab.compiler import compile_spec
from compile_bench import encoder_spec, spec_dict, without_head
from prune_bench import (
    busy_warning,
    call_seconds,
    device_name,
    load_before,
    loadavg,
    synchronize,
)

Inputs = dict[str, Tensor]

MODES = ("infer", "train")
MAX_SEQ = {"bert-base": 512, "gpt2-small": 1024}  # the specs' (and peers') position tables
TOLERANCE = 1e-4  # float32 agreement, relative to max(1, the peer output's largest magnitude)

# GPU figures of the peers, from ../shared/anchors.md (one H100 80GB HBM3, PyTorch 2.11 + CUDA 13,
# medians of 20-30 calls, CUDA events): printed on CUDA for context, next to this run's own rows.
ANCHORS: dict[str, list[tuple[str, str]]] = {
    "vit-s16": [
        ("timm vit_small_patch16_224, batch 256, bf16 weights, eager", "22,890 img/s"),
        ("same, fp32 weights + bf16 autocast, eager", "17,566 img/s"),
        ("same, bf16 weights, torch.compile", "25,605 img/s"),
        ("timm ViT-S/16 training step, batch 128, autocast, fused AdamW", "4,710 img/s"),
    ],
    "vit-b16": [("timm vit_base_patch16_224, batch 256, autocast, eager", "8,387 img/s")],
    "gpt2-small": [
        ("HF GPT-2 small, 16 x 1024, sdpa, autocast, inference", "379,202 tok/s"),
        ("same, training step, fused AdamW", "128,119 tok/s"),
        ("same training step under torch.compile", "284,505 tok/s"),
    ],
    "encoder-deit-s": [
        (
            "nn.TransformerEncoder 12 x 384, 6 heads, seq 197, batch 256, fp16 (fast path)",
            "30,250 seq/s",
        )
    ],
}


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


def build_vit(w: Workload, device: str) -> tuple[nn.Module, nn.Module, str]:
    import timm

    stem, name, drop_path = {
        "vit-s16": ("deit-small-16", "vit_small_patch16_224", 0.1),
        "vit-b16": ("vit-base-16", "vit_base_patch16_224", 0.0),
    }[w.key]
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


def build_pair(w: Workload, args: argparse.Namespace, seq: int) -> Pair:
    """Both models in float32 with the same weights, checked, then cast to the run's dtype."""
    device, dtype = args.device, args.weight_dtype
    if w.kind == "image":
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
    pair = Pair(peer_label, ours, peer, make_inputs, call_ours, call_peer, loss)
    pair.match = check_outputs(pair, w, min(seq, 64), device)
    pair.peer.to(dtype)
    if dtype != torch.float32:  # archlab's own build in the run's dtype: same seed, same weights
        pair.ours = compile_spec(ours.spec, device=device, dtype=dtype, seed=0)
    del ours, peer
    return pair


def check_outputs(pair: Pair, w: Workload, seq: int, device: str) -> str:
    """Run both in float32 and eval on a small input; 'outputs match' or the largest difference."""
    inputs = pair.make_inputs(2, seq, torch.float32)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        pair.ours.eval()
        pair.peer.eval()
        with torch.inference_mode():
            a = pair.call_ours(pair.ours, inputs).float()
            b = pair.call_peer(pair.peer, inputs).float()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    if a.shape != b.shape:
        return f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a - b).abs().max().item()
    scale = max(1.0, b.abs().max().item())
    if diff <= TOLERANCE * scale:
        return f"outputs match ({diff:.1e})"
    return f"max diff {diff:.2e} (scale {scale:.2g})"


# ------------------------------------------------------------------------------------- timing


@dataclass
class Row:
    mode: str
    key: str
    workload: str
    peer: str
    shape: str
    unit: str
    items: int  # images, tokens or sequences per call
    archlab_ms: float = 0.0
    peer_ms: float = 0.0
    ratio: float = 0.0
    paired: float = 0.0  # median over rounds of peer / archlab within the round
    archlab_per_s: float = 0.0
    peer_per_s: float = 0.0
    outputs: str = ""
    archlab_spread: float = 0.0
    peer_spread: float = 0.0
    archlab_times_s: list[float] = field(default_factory=list)
    peer_times_s: list[float] = field(default_factory=list)


def sizes(w: Workload, args: argparse.Namespace, mode: str) -> tuple[int, int]:
    if args.quick:
        batch, seq = 2, 32 if w.kind != "image" else 197
    elif args.device == "cuda":
        batch, seq = w.cuda
        if mode == "train" and w.cuda_train_batch is not None:
            batch = w.cuda_train_batch
    else:
        batch, seq = w.cpu
    batch = args.batch or batch
    if args.seq and w.kind != "image":
        seq = args.seq
    return batch, seq


def calls(args: argparse.Namespace, mode: str) -> tuple[int, int]:
    if args.quick:
        warmup, iters = 1, 2
    elif args.device == "cuda":
        warmup, iters = (10, 30) if mode == "infer" else (5, 20)
    else:
        warmup, iters = (2, 10) if mode == "infer" else (2, 6)
    return (args.warmup if args.warmup is not None else warmup), args.iters or iters


def steps(
    pair: Pair, args: argparse.Namespace, mode: str, inputs: Inputs
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The two callables to time: a forward (infer) or a training step (train), per side."""
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
        (lambda: torch.autocast(args.device, dtype=torch.bfloat16))
        if args.autocast
        else contextlib.nullcontext
    )
    made = []
    for module, call in ((pair.ours, pair.call_ours), (pair.peer, pair.call_peer)):
        run = torch.compile(module) if args.compile else module
        if mode == "infer":
            module.eval()

            def forward(run: Any = run, call: Any = call) -> Any:
                with autocast():
                    return call(run, inputs)

            made.append(forward)
            continue
        module.train()
        opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=args.device == "cuda")

        def step(run: Any = run, call: Any = call, opt: Any = opt) -> Any:
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = pair.loss(call(run, inputs), inputs)
            loss.backward()
            opt.step()
            return loss

        made.append(step)
    return made[0], made[1]


@contextlib.contextmanager
def grad_mode(mode: str) -> Iterator[None]:
    with torch.inference_mode() if mode == "infer" else contextlib.nullcontext():
        yield


def time_pair(
    ours: Callable[[], Any],
    peer: Callable[[], Any],
    mode: str,
    warmup: int,
    iters: int,
    device: str,
) -> tuple[list[float], list[float]]:
    """Warm both up, then time them in rounds, the order alternating; seconds per call."""
    a: list[float] = []
    b: list[float] = []
    with grad_mode(mode):
        for _ in range(max(1, warmup)):
            for fn in (ours, peer):
                fn()
                synchronize(device)
        for it in range(iters):
            order = ((ours, a), (peer, b)) if it % 2 == 0 else ((peer, b), (ours, a))
            for fn, times in order:
                times.append(call_seconds(lambda _, fn=fn: fn(), None, device))
    return a, b


def profile_pair(
    pair: Pair, ours: Callable[[], Any], peer: Callable[[], Any], mode: str, label: str, device: str
) -> None:
    """torch.profiler's top operators by self time of one call of each side."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"
    for side, fn in (("archlab", ours), (pair.peer_label, peer)):
        with grad_mode(mode):
            fn()
            synchronize(device)
            with profile(activities=activities) as prof:
                fn()
                synchronize(device)
        print(f"\n### profile ({mode}): {label}, {side}, one call\n")
        print(prof.key_averages().table(sort_by=sort, row_limit=15))


def run_workload(w: Workload, args: argparse.Namespace) -> list[Row]:
    seqs = {sizes(w, args, m)[1] for m in args.mode}
    if max(seqs) > MAX_SEQ.get(w.key, max(seqs)):
        sys.exit(f"{w.label}: --seq {max(seqs)} is longer than its {MAX_SEQ[w.key]} positions")
    pair = build_pair(w, args, max(seqs))
    rows = []
    for mode in args.mode:
        batch, seq = sizes(w, args, mode)
        warmup, iters = calls(args, mode)
        inputs = pair.make_inputs(batch, seq)
        ours, peer = steps(pair, args, mode, inputs)
        t0 = time.perf_counter()
        a, b = time_pair(ours, peer, mode, warmup, iters, args.device)
        shape = f"{batch} x 3 x 224 x 224" if w.kind == "image" else f"{batch} x {seq}"
        items = batch * seq if w.kind == "text" else batch
        ma, mb = statistics.median(a), statistics.median(b)
        row = Row(
            mode=mode,
            key=w.key,
            workload=w.label,
            peer=pair.peer_label,
            shape=shape,
            unit=w.unit,
            items=items,
            archlab_ms=ma * 1e3,
            peer_ms=mb * 1e3,
            ratio=mb / ma,
            paired=statistics.median(y / x for x, y in zip(a, b, strict=True)),
            archlab_per_s=items / ma,
            peer_per_s=items / mb,
            outputs=pair.match,
            archlab_spread=(max(a) - min(a)) / ma,
            peer_spread=(max(b) - min(b)) / mb,
            archlab_times_s=a,
            peer_times_s=b,
        )
        rows.append(row)
        print(
            f"# {mode}: {w.label} vs {pair.peer_label}, {shape}: archlab {row.archlab_ms:,.1f} ms, "
            f"peer {row.peer_ms:,.1f} ms, ratio {row.ratio:.2f}, paired {row.paired:.2f}, "
            f"spread {spread(row):.0%} ({warmup} + {iters} calls, "
            f"{time.perf_counter() - t0:.0f} s, load {loadavg()})",
            flush=True,
        )
        if args.profile:
            profile_pair(pair, ours, peer, mode, w.label, args.device)
        del ours, peer, inputs
        gc.collect()
    del pair
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------- reporting


def rate(per_s: float) -> str:
    return f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.3g}"


def spread(row: Row) -> float:
    return max(row.archlab_spread, row.peer_spread)


def table(rows: list[Row], mode: str, warmup: int, iters: int) -> str:
    what = (
        "one forward, eval, inference_mode"
        if mode == "infer"
        else "one training step: forward, loss, backward, AdamW"
    )
    lines = [
        f"\n## {mode}: {what} ({warmup} warm-up + {iters} timed calls each, median)\n",
        "| workload | peer | shape | archlab ms | peer ms | ratio (peer/archlab) | paired "
        "| spread | archlab /s | peer /s | outputs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.peer} | {r.shape} | {r.archlab_ms:,.1f} | {r.peer_ms:,.1f} "
            f"| {r.ratio:.2f} | {r.paired:.2f} | {spread(r):.0%} | {rate(r.archlab_per_s)} {r.unit} "
            f"| {rate(r.peer_per_s)} {r.unit} | {r.outputs} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row], device: str, dtype: str) -> list[str]:
    """The issue's CPU targets, where this run measured them."""
    out = []
    infer = {r.key: r for r in rows if r.mode == "infer"}
    where = (
        ""
        if device == "cpu" and dtype == "float32"
        else f" (measured on {device}, {dtype}; the targets are for the CPU in float32)"
    )
    for key in ("encoder-deit-s", "encoder-bert", "gpt2-small"):
        r = infer.get(key)
        if r is None:
            continue
        met = "MET" if r.ratio >= 1.0 else "NOT MET"
        out.append(
            f"target: {r.workload} >= 1.0x {r.peer} in inference: {r.ratio:.2f}x, {met}{where}"
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="weights and inputs (default: float32 on cpu, bfloat16 on cuda)",
    )
    parser.add_argument(
        "--autocast", action="store_true", help="float32 weights under bfloat16 autocast"
    )
    parser.add_argument("--batch", type=int, help="batch size of every workload")
    parser.add_argument("--seq", type=int, help="sequence length of the text and encoder workloads")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), help="workloads to run")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 1 + 2 calls")
    parser.add_argument("--iters", type=int, help="timed calls per side")
    parser.add_argument("--warmup", type=int, help="warm-up calls per side")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument(
        "--profile", action="store_true", help="print the top operators of one call of each side"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.autocast and args.dtype not in (None, "float32"):
        parser.error("--autocast keeps float32 weights; drop --dtype")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device == "cuda" and not args.autocast else "float32"
    args.weight_dtype = getattr(torch, args.dtype)
    args.mode = [m for m in MODES if m in args.mode]
    args.only = args.only or list(WORKLOADS)
    return args


TIMM_HINT = "pip install timm, with a torchvision built for this torch"


def main(argv: list[str] | None = None) -> None:
    before = load_before()  # what other processes were doing
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    versions = {p: peer_version(p) for p in ("timm", "transformers")}
    shown = ", ".join(f"{p} {v or 'absent'}" for p, (v, _) in versions.items())
    precision = "float32 weights + bfloat16 autocast" if args.autocast else f"{args.dtype} weights"
    print(
        f"# archlab {archlab.__version__}, torch {torch.__version__}, {shown}, "
        f"python {platform.python_version()}"
    )
    print(
        f"# device {args.device}: {device_name(args.device)}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {precision}, {'torch.compile' if args.compile else 'eager'}, "
        f"load {loadavg()}"
    )
    start = time.perf_counter()
    rows: list[Row] = []
    skipped: list[str] = []
    for key in args.only:
        w = WORKLOADS[key]
        if w.needs is not None and versions[w.needs][0] is None:
            how = "pip install -e .[bench]" if w.needs == "transformers" else TIMM_HINT
            skipped.append(f"{w.label}: skipped, {versions[w.needs][1]} ({how})")
            print(f"# {skipped[-1]}", flush=True)
            continue
        rows += run_workload(w, args)

    for mode in args.mode:
        warmup, iters = calls(args, mode)
        mode_rows = [r for r in rows if r.mode == mode]
        if mode_rows:
            print(table(mode_rows, mode, warmup, iters))
    for note in skipped:
        print(f"\n{note}")
    print()
    for line in targets(rows, args.device, args.dtype):
        print(line)
    warning = busy_warning(torch.get_num_threads(), before) if args.device == "cpu" else None
    if warning:
        print("\n" + warning)
    if args.device == "cuda":
        print("\nanchors (../shared/anchors.md, one H100, PyTorch 2.11, not this run):")
        for key in args.only:
            for what, figure in ANCHORS.get(key, []):
                print(f"- {what}: {figure}")
    print(f"\n# total {time.perf_counter() - start:.0f} s, load {loadavg()}")

    if args.json:
        payload = {
            "meta": {
                "archlab": archlab.__version__,
                "torch": torch.__version__,
                "timm": versions["timm"][0],
                "transformers": versions["transformers"][0],
                "python": platform.python_version(),
                "device": args.device,
                "device_name": device_name(args.device),
                "threads": torch.get_num_threads(),
                "dtype": args.dtype,
                "autocast": args.autocast,
                "compile": args.compile,
                "load_before": before,
                "load_end": loadavg(),
                "warning": warning,
                "skipped": skipped,
            },
            "rows": [asdict(r) for r in rows],
            "targets": targets(rows, args.device, args.dtype),
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
