"""``summary().paths``: the performance paths read back from the built model."""

from __future__ import annotations

import archlab


def paths(stem: str, **options: str) -> dict[str, dict[str, str | int]]:
    model = archlab.compile_spec(f"specs/{stem}.json", device="meta", **options)
    return {p["name"]: p for p in model.summary().paths}


def test_half_precision_weights_and_grouped_query_attention() -> None:
    fp32 = paths("llama-style")
    assert fp32["weights"]["choice"] == "float32"
    assert fp32["grouped-query attention"]["choice"] == "K/V heads repeated"
    bf16 = paths("llama-style", dtype="bfloat16")
    assert bf16["weights"]["choice"] == "bfloat16"
    assert bf16["grouped-query attention"]["choice"] == "SDPA enable_gqa"
    assert bf16["grouped-query attention"]["count"] == 8  # every layer of the decoder
    assert "is_causal (8)" in str(bf16["masks"]["reason"])


def test_fused_projections_count_self_attention_only() -> None:
    found = paths("transformer-tiny")  # encoder-decoder: the decoder's cross-attention is not fused
    model = archlab.compile_spec("specs/transformer-tiny.json", device="meta")
    encoder, decoder = len(model.encoder.layers), len(model.decoder.layers)
    assert found["qkv projection"]["count"] == encoder + decoder
    assert "grouped-query attention" not in found and "token pruning" not in found


def test_masks_and_pruning_rows_follow_the_spec() -> None:
    windowed = paths("sliding-window-decoder")
    assert "masks" not in windowed  # a window needs a mask tensor (or FlexAttention on CUDA)
    pruned = paths("dynamicvit-deit-s")
    assert pruned["token pruning"]["count"] == 3
    assert pruned["masks"]["count"] == 12
