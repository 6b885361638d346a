"""Mixup / CutMix (``archlab.runners.mixup``): the draws, the mixed images and targets, the soft
cross-entropy, reproducibility from the generator, and the refusals (CutMix on non-images, odd
batches in pair mode)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from archlab.errors import UserInputError
from archlab.registry.records import MixupSetting
from archlab.runners.mixup import (
    CutMixInputError,
    Mixer,
    MixParams,
    MixupError,
    sample_beta,
    smooth_one_hot,
    soft_target_cross_entropy,
)

CLASSES = 10
HW = (16, 12)


def mixer(seed: int = 0, classes: int = CLASSES, **setting: Any) -> Mixer:
    return Mixer(MixupSetting(**setting), classes, torch.Generator().manual_seed(seed))


def images(batch: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *HW, generator=torch.Generator().manual_seed(seed))


def labels(batch: int = 8) -> torch.Tensor:
    return torch.arange(batch) % CLASSES


def from_partner(x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """Per element, which pixels of ``mixed`` are the partner's (x.flip(0)) and not its own."""
    partner = x.flip(0)
    return ((mixed == partner) & (mixed != x)).all(dim=1)


@pytest.mark.parametrize(
    "setting",
    [
        {"alpha": 0.8, "mode": "elem", "label_smoothing": 0.1},
        {"cutmix_alpha": 1.0, "mode": "pair", "prob": 0.7},
        {"alpha": 0.2, "cutmix_alpha": 1.0, "mode": "batch", "label_smoothing": 0.3},
    ],
)
def test_mixed_targets_are_distributions(setting: dict[str, Any]) -> None:
    m = mixer(**setting)
    for _ in range(20):
        p = m.sample(8, HW, epoch=0)
        t = m.targets(labels(), p)
        assert t.shape == (8, CLASSES) and t.dtype == torch.float32
        assert torch.allclose(t.sum(dim=1), torch.ones(8))
        assert bool((t >= 0).all()) and bool((t <= 1).all())


@pytest.mark.parametrize("prob, epoch", [(0.0, 0), (1.0, 3), (1.0, 4)])
def test_unmixed_when_prob_zero_or_off_epoch(prob: float, epoch: int) -> None:
    m = mixer(alpha=1.0, cutmix_alpha=1.0, prob=prob, off_epoch=3, label_smoothing=0.2)
    before = m.generator.get_state()
    p = m.sample(8, HW, epoch=epoch)
    assert not m.active(epoch)
    assert torch.equal(m.generator.get_state(), before)  # nothing drawn
    assert bool((p.lam == 1).all()) and not bool(p.cutmix.any()) and p.boxes is None
    x = images()
    assert m.mix_images(x, p) is x
    assert torch.equal(m.targets(labels(), p), smooth_one_hot(labels(), CLASSES, 0.2))
    assert m.active(2) == (prob > 0)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_cutmix_pixels_from_partner_match_corrected_lam(mode: str) -> None:
    m = mixer(cutmix_alpha=1.0, mode=mode)
    x = images()
    height, width = HW
    for _ in range(20):
        p = m.sample(8, HW, epoch=0)
        assert bool(p.cutmix.all()) and p.boxes is not None
        mixed = m.mix_images(x, p)
        taken = from_partner(x, mixed).sum(dim=(1, 2))
        area = (p.boxes[:, 1] - p.boxes[:, 0]) * (p.boxes[:, 3] - p.boxes[:, 2])
        assert torch.equal(taken, area)
        assert torch.equal(taken, torch.round((1 - p.lam.double()) * height * width).long())
        assert torch.allclose(p.lam.double(), 1 - area.double() / (height * width))
        # outside the box every pixel is the element's own
        rows, cols = torch.arange(height), torch.arange(width)
        for i, (y0, y1, x0, x1) in enumerate(p.boxes.tolist()):
            inside = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None]
            assert torch.equal(mixed[i][:, ~inside], x[i][:, ~inside])
            assert torch.equal(mixed[i][:, inside], x.flip(0)[i][:, inside])


def test_cutmix_minmax_bounds_the_box_sides() -> None:
    lo, hi = 0.3, 0.6
    m = mixer(cutmix_minmax=(lo, hi), mode="elem")
    height, width = 40, 50
    sides = []
    for _ in range(10):
        p = m.sample(16, (height, width), epoch=0)
        assert p.boxes is not None and bool(p.cutmix.all())
        h = p.boxes[:, 1] - p.boxes[:, 0]
        w = p.boxes[:, 3] - p.boxes[:, 2]
        assert bool((h <= hi * height).all()) and bool((h > lo * height - 1).all())
        assert bool((w <= hi * width).all()) and bool((w > lo * width - 1).all())
        assert bool((p.boxes[:, 0] >= 0).all()) and bool((p.boxes[:, 1] <= height).all())
        assert bool((p.boxes[:, 2] >= 0).all()) and bool((p.boxes[:, 3] <= width).all())
        assert torch.allclose(p.lam.double(), 1 - (h * w).double() / (height * width))
        sides.append(h)
    assert len(set(torch.cat(sides).tolist())) > 3  # drawn, not fixed


def test_mixup_image_is_the_convex_combination_with_the_flipped_batch() -> None:
    m = mixer(alpha=0.4)
    x = images()
    p = m.sample(8, HW, epoch=0)
    assert not bool(p.cutmix.any()) and p.boxes is None
    assert bool((p.lam < 1).all()) and bool((p.lam == p.lam[0]).all())  # batch mode: one lam
    lam = p.lam[0].item()
    assert torch.allclose(m.mix_images(x, p), lam * x + (1 - lam) * x.flip(0))
    y = labels()
    one_hot = F.one_hot(y, CLASSES).float()
    assert torch.allclose(m.targets(y, p), lam * one_hot + (1 - lam) * one_hot.flip(0))


def test_elem_mode_draws_per_element() -> None:
    m = mixer(alpha=1.0, mode="elem")
    x = images()
    p = m.sample(8, HW, epoch=0)
    assert len(set(p.lam.tolist())) == 8
    lam = p.lam.view(8, 1, 1, 1)
    assert torch.allclose(m.mix_images(x, p), lam * x + (1 - lam) * x.flip(0))
    y = labels()
    one_hot = F.one_hot(y, CLASSES).float()
    lam2 = p.lam[:, None]
    assert torch.allclose(m.targets(y, p), lam2 * one_hot + (1 - lam2) * one_hot.flip(0))


def test_elem_mode_mixes_cutmix_and_mixup_elements() -> None:
    m = mixer(alpha=1.0, cutmix_alpha=1.0, mode="elem")
    x = images(32)
    p = m.sample(32, HW, epoch=0)
    assert 0 < int(p.cutmix.sum()) < 32 and p.boxes is not None
    mixed = m.mix_images(x, p)
    for i in range(32):
        lam = p.lam[i].item()
        if p.cutmix[i]:
            area = (p.boxes[i, 1] - p.boxes[i, 0]) * (p.boxes[i, 3] - p.boxes[i, 2])
            assert int(((mixed[i] == x.flip(0)[i]).all(dim=0)).sum()) == int(area)
        else:
            assert int(p.boxes[i].sum()) == 0
            assert torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x.flip(0)[i])


@pytest.mark.parametrize("setting", [{"alpha": 1.0}, {"alpha": 1.0, "cutmix_alpha": 1.0}])
def test_pair_mode_mirrors_and_refuses_odd_batches(setting: dict[str, Any]) -> None:
    m = mixer(mode="pair", **setting)
    p = m.sample(8, HW, epoch=0)
    assert torch.equal(p.lam, p.lam.flip(0))
    assert torch.equal(p.cutmix, p.cutmix.flip(0))
    assert len(set(p.lam[:4].tolist())) == 4
    if p.boxes is not None:
        assert torch.equal(p.boxes, p.boxes.flip(0))
    with pytest.raises(MixupError, match="even batch size"):
        m.sample(7, HW, epoch=0)
    assert issubclass(MixupError, UserInputError)


@pytest.mark.parametrize("switch_prob, cutmix", [(1.0, True), (0.0, False)])
def test_switch_prob_picks_cutmix_or_mixup(switch_prob: float, cutmix: bool) -> None:
    m = mixer(alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob, mode="elem")
    for _ in range(10):
        p = m.sample(16, HW, epoch=0)
        assert bool((p.cutmix == cutmix).all())
        assert (p.boxes is not None) == cutmix


def test_switch_prob_half_gives_both() -> None:
    m = mixer(alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5, mode="elem")
    used = torch.cat([m.sample(16, HW, epoch=0).cutmix for _ in range(10)]).float().mean()
    assert 0.3 < used.item() < 0.7


def test_prob_mixes_that_fraction_of_draws() -> None:
    m = mixer(alpha=1.0, prob=0.25, mode="elem")
    mixed = torch.cat([m.sample(64, HW, epoch=0).lam < 1 for _ in range(20)]).float().mean()
    assert 0.2 < mixed.item() < 0.3


def _draws(seed: int) -> list[MixParams]:
    m = mixer(seed=seed, alpha=0.8, cutmix_alpha=1.0, mode="elem", prob=0.9)
    return [m.sample(8, HW, epoch=0) for _ in range(5)]


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    a, b, c = _draws(3), _draws(3), _draws(4)
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa.lam, pb.lam) and torch.equal(pa.cutmix, pb.cutmix)
        assert (pa.boxes is None) == (pb.boxes is None)
        if pa.boxes is not None and pb.boxes is not None:
            assert torch.equal(pa.boxes, pb.boxes)
    assert not all(torch.equal(pa.lam, pc.lam) for pa, pc in zip(a, c, strict=True))


@pytest.mark.parametrize("a, b", [(0.2, 0.2), (0.8, 0.8), (1.0, 1.0), (2.5, 2.5), (0.5, 3.0)])
def test_beta_sampler_mean_and_variance(a: float, b: float) -> None:
    draws = sample_beta(a, b, 200_000, torch.Generator().manual_seed(0))
    assert draws.dtype == torch.float64 and draws.shape == (200_000,)
    assert bool((draws >= 0).all()) and bool((draws <= 1).all())
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    assert draws.mean().item() == pytest.approx(mean, abs=0.004)
    assert draws.var().item() == pytest.approx(var, rel=0.02)


def test_beta_one_one_is_uniform() -> None:
    draws = sample_beta(1.0, 1.0, 100_000, torch.Generator().manual_seed(1))
    deciles = torch.quantile(draws[:50_000], torch.linspace(0.1, 0.9, 9, dtype=torch.float64))
    assert torch.allclose(deciles, torch.linspace(0.1, 0.9, 9, dtype=torch.float64), atol=0.01)


def test_beta_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="Beta parameters"):
        sample_beta(0.0, 1.0, 4, torch.Generator())


def test_cutmix_on_tokens_is_a_user_input_error() -> None:
    assert issubclass(CutMixInputError, UserInputError)
    m = mixer(cutmix_alpha=1.0)
    with pytest.raises(CutMixInputError, match=r"CutMix needs image inputs.*--mixup"):
        m.sample(8, None, epoch=0)
    tokens = torch.randint(0, 100, (8, 32))
    with pytest.raises(CutMixInputError, match=r"CutMix needs image inputs.*--mixup"):
        m.mix_images(tokens, m.sample(8, HW, epoch=0))
    with pytest.raises(CutMixInputError, match="CutMix needs image inputs"):
        m.mix_features(torch.randn(8, 32, 16), m.sample(8, HW, epoch=0))


def test_mixup_only_refuses_token_ids_as_images() -> None:
    m = mixer(alpha=1.0)
    with pytest.raises(MixupError, match="mix_features"):
        m.mix_images(torch.randint(0, 100, (8, 32)), m.sample(8, None, epoch=0))
    with pytest.raises(MixupError, match="float features"):
        m.mix_features(torch.randint(0, 100, (8, 32)), m.sample(8, None, epoch=0))


def test_mix_features_mixes_embeddings_from_a_forward_hook() -> None:
    m = mixer(alpha=1.0, mode="elem")
    embed = torch.nn.Embedding(100, 16)
    ids = torch.randint(0, 100, (8, 5), generator=torch.Generator().manual_seed(2))
    plain = embed(ids)
    p = m.sample(8, None, epoch=0)
    handle = embed.register_forward_hook(lambda _mod, _inp, out: m.mix_features(out, p))
    mixed = embed(ids)
    handle.remove()
    lam = p.lam.view(8, 1, 1)
    assert torch.allclose(mixed, lam * plain + (1 - lam) * plain.flip(0))
    mixed.sum().backward()  # gradients flow through both partners
    assert embed.weight.grad is not None


def test_mix_checks_batch_and_image_size() -> None:
    m = mixer(cutmix_alpha=1.0)
    p = m.sample(8, HW, epoch=0)
    with pytest.raises(ValueError, match="batch of 8"):
        m.mix_images(images(4), p)
    with pytest.raises(MixupError, match="drawn for"):
        m.mix_images(torch.randn(8, 3, 8, 8), p)


def test_label_smoothing_above_one_is_refused() -> None:
    with pytest.raises(MixupError, match="label smoothing"):
        mixer(alpha=1.0, label_smoothing=1.5)


def test_soft_target_cross_entropy_matches_cross_entropy() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(16, CLASSES, generator=g)
    y = torch.randint(0, CLASSES, (16,), generator=g)
    hard = soft_target_cross_entropy(logits, smooth_one_hot(y, CLASSES, 0.0))
    assert torch.allclose(hard, F.cross_entropy(logits, y))
    for smoothing in (0.1, 0.3):
        soft = soft_target_cross_entropy(logits, smooth_one_hot(y, CLASSES, smoothing))
        assert torch.allclose(soft, F.cross_entropy(logits, y, label_smoothing=smoothing))


def test_smooth_one_hot_values() -> None:
    t = smooth_one_hot(torch.tensor([2, 0]), 4, 0.2)
    assert torch.allclose(t[0], torch.tensor([0.05, 0.05, 0.85, 0.05]))
    assert torch.allclose(t.sum(dim=1), torch.ones(2))
