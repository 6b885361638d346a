"""Mixup and CutMix for training batches, with the semantics of timm's ``Mixup``.

A :class:`Mixer` is built from the registry's :class:`~archlab.registry.records.MixupSetting`, the
number of classes and an explicit :class:`torch.Generator`, so that a run draws exactly the same
mixing again from the same seed. Each training step:

1. ``p = mixer.sample(batch, image_hw, epoch)`` draws what this batch gets: per element a mixing
   weight ``lam`` (1: unmixed), whether CutMix is used and the CutMix box.
2. ``x = mixer.mix_images(x, p)`` mixes (B, C, H, W) images. Token inputs cannot be mixed as ids:
   the training loop mixes their embeddings instead, ``mixer.mix_features(out, p)`` from a forward
   hook on the embedding module (mixup only; CutMix on a non-image input is a
   :class:`CutMixInputError`).
3. ``loss = soft_target_cross_entropy(logits, mixer.targets(y, p))``.

Every element is mixed with its partner in the reversed batch (``x.flip(0)``), as timm does.
Evaluation never mixes: nothing here is meant for validation or test batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from archlab.errors import UserInputError
from archlab.registry.records import MixupSetting

__all__ = [
    "CutMixInputError",
    "MixParams",
    "Mixer",
    "MixupError",
    "sample_beta",
    "smooth_one_hot",
    "soft_target_cross_entropy",
]


class MixupError(UserInputError):
    """A mixup setting cannot be applied as asked (an odd batch in ``pair`` mode, a label smoothing
    above 1, images of another size than the drawn boxes)."""


class CutMixInputError(MixupError):
    """CutMix asked of an input that is not an image (token ids, embeddings)."""


_CUTMIX_NEEDS_IMAGES = (
    "CutMix needs image inputs (batch, channels, height, width); {what}. Token inputs can only be "
    "mixed on their embeddings: use --mixup instead of CutMix"
)


@dataclass(frozen=True)
class MixParams:
    """What one :meth:`Mixer.sample` call drew for a batch of B elements.

    ``lam`` (B,) float32: the weight of each element's own sample and target (1: unmixed; for
    CutMix, the fraction of its pixels left uncovered by the box). ``cutmix`` (B,) bool: which
    elements are mixed by CutMix rather than mixup. ``boxes`` (B, 4) int64 ``y0, y1, x0, x1``
    (half-open) of the pasted region, rows of non-CutMix elements empty; None when no element uses
    CutMix. ``image_hw`` is the image size the boxes were drawn for. All tensors live on the
    generator's device; the ``mix_*`` methods move them to the input's.
    """

    lam: Tensor
    cutmix: Tensor
    boxes: Tensor | None
    image_hw: tuple[int, int] | None


def sample_beta(a: float, b: float, count: int, generator: torch.Generator) -> Tensor:
    """``count`` draws of Beta(a, b) as float64 on the generator's device.

    ``torch.distributions.Beta`` and ``torch._standard_gamma`` take no generator, so this draws
    Beta(a, b) = G_a / (G_a + G_b) from two Gamma(shape, 1) variables sampled by
    :func:`_log_gamma` with the generator's normals and uniforms. The ratio is taken in log space,
    ``sigmoid(log G_a - log G_b)``, so small shapes (whose Gamma draws underflow) stay exact.
    """
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"Beta parameters must be finite and > 0, not ({a!r}, {b!r})")
    return torch.sigmoid(_log_gamma(a, count, generator) - _log_gamma(b, count, generator))


def _log_gamma(shape: float, count: int, generator: torch.Generator) -> Tensor:
    """Logs of ``count`` Gamma(shape, 1) draws (float64), by Marsaglia and Tsang's method.

    Marsaglia & Tsang (2000), "A simple method for generating gamma variables": for shape >= 1,
    with d = shape - 1/3 and c = 1 / sqrt(9 d), draw z ~ N(0, 1) and u ~ U(0, 1), set
    v = (1 + c z)^3 and accept d v when v > 0 and log u < z^2 / 2 + d - d v + d log v (over 95% of
    candidates are accepted). Rejected positions are redrawn, vectorised, until all are accepted.
    For shape < 1 it draws Gamma(shape + 1) and multiplies by U^(1/shape) (adds log(U) / shape).
    """
    device = generator.device
    boosted = shape < 1
    d = (shape + 1 if boosted else shape) - 1 / 3
    c = 1 / math.sqrt(9 * d)
    out = torch.empty(count, dtype=torch.float64, device=device)
    pending = torch.arange(count, device=device)
    while pending.numel():
        z = torch.randn(pending.numel(), generator=generator, dtype=torch.float64, device=device)
        u = torch.rand(pending.numel(), generator=generator, dtype=torch.float64, device=device)
        v = (1 + c * z) ** 3
        log_v = torch.log(v.clamp_min(torch.finfo(torch.float64).tiny))
        accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
        out[pending[accept]] = math.log(d) + log_v[accept]
        pending = pending[~accept]
    if boosted:  # 1 - U is uniform on (0, 1], so its log is finite
        u = torch.rand(count, generator=generator, dtype=torch.float64, device=device)
        out += torch.log1p(-u) / shape
    return out


def smooth_one_hot(y: Tensor, classes: int, smoothing: float) -> Tensor:
    """(B,) class indices as (B, classes) float32 targets with label smoothing: every class gets
    ``smoothing / classes``, the true one ``1 - smoothing + smoothing / classes`` (each row sums to
    1, the targets ``F.cross_entropy(label_smoothing=smoothing)`` uses)."""
    if not 0 <= smoothing <= 1:
        raise ValueError(f"label smoothing must be in [0, 1], not {smoothing!r}")
    off = smoothing / classes
    on = 1 - smoothing + off
    return F.one_hot(y.long(), classes).to(torch.float32) * (on - off) + off


def soft_target_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy against soft targets: the mean over the batch of
    ``-sum(target * log_softmax(logits))`` over the last (class) dimension. With one-hot or
    smoothed one-hot targets it equals ``F.cross_entropy`` (with ``label_smoothing``)."""
    if logits.shape != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(target.shape)} differ in shape"
        )
    log_probs = F.log_softmax(logits, dim=-1)
    return -(target.to(log_probs.dtype) * log_probs).sum(dim=-1).mean()


class Mixer:
    """Draws and applies mixup / CutMix for training batches (see the module docstring).

    Per :meth:`sample` call, as timm's ``Mixup``: with probability ``prob`` a draw is mixed at all.
    When both mixup (``alpha > 0``) and CutMix (``cutmix_alpha > 0`` or ``cutmix_minmax``) are on,
    CutMix is used with probability ``switch_prob``; else whichever is on. Mixup's ``lam`` is drawn
    from Beta(alpha, alpha); CutMix's from Beta(cutmix_alpha, cutmix_alpha) gives a box of sides
    ``floor(sqrt(1 - lam) * H)`` by ``floor(sqrt(1 - lam) * W)`` centred at a uniformly drawn pixel
    and clipped to the image; with ``cutmix_minmax`` the side ratios are instead uniform in
    [min, max] (sides ``floor(ratio * H)``, ``floor(ratio * W)``) and the box is placed uniformly
    inside the image. CutMix's ``lam`` is then the fraction of pixels the box leaves uncovered.

    ``mode`` says how many draws a batch gets: ``batch`` one for all elements, ``elem`` one per
    element, ``pair`` one per pair (element i and B-1-i share it; needs an even batch). From epoch
    ``off_epoch`` on (0-based) nothing is mixed and nothing is drawn.
    """

    def __init__(self, setting: MixupSetting, classes: int, generator: torch.Generator) -> None:
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise MixupError(f"mixup needs a number of classes >= 1, not {classes!r}")
        if setting.label_smoothing > 1:
            raise MixupError(f"label smoothing must be in [0, 1], not {setting.label_smoothing!r}")
        self.setting = setting
        self.classes = classes
        self.generator = generator
        self._mixup_on = setting.alpha > 0
        self._cutmix_on = setting.cutmix_alpha > 0 or setting.cutmix_minmax is not None

    def active(self, epoch: int) -> bool:
        """Whether batches of this 0-based epoch are mixed at all."""
        off = self.setting.off_epoch
        return self.setting.active and (off is None or epoch < off)

    def sample(self, batch: int, image_hw: tuple[int, int] | None, epoch: int) -> MixParams:
        """Draw the mixing of one training batch of ``batch`` elements; ``image_hw`` is the
        (height, width) of image inputs, None for any other input (CutMix then refuses)."""
        if batch < 1:
            raise ValueError(f"a batch has at least one element, not {batch}")
        g = self.generator
        if not self.active(epoch):
            ones = torch.ones(batch, dtype=torch.float32, device=g.device)
            return MixParams(
                ones, torch.zeros(batch, dtype=torch.bool, device=g.device), None, None
            )
        if self._cutmix_on and image_hw is None:
            raise CutMixInputError(_CUTMIX_NEEDS_IMAGES.format(what="this input is not an image"))
        mode = self.setting.mode
        if mode == "pair" and batch % 2:
            raise MixupError(
                f"mixup mode 'pair' needs an even batch size, got a batch of {batch} (use an even "
                "batch size and drop the last incomplete batch, or mode 'batch' or 'elem')"
            )
        draws = {"batch": 1, "pair": batch // 2, "elem": batch}[mode]

        mixed = torch.rand(draws, generator=g, device=g.device) < self.setting.prob
        if self._mixup_on and self._cutmix_on:
            use_cutmix = torch.rand(draws, generator=g, device=g.device) < self.setting.switch_prob
        else:
            use_cutmix = torch.full((draws,), self._cutmix_on, device=g.device)
        use_cutmix &= mixed
        lam = torch.ones(draws, dtype=torch.float64, device=g.device)
        if self._mixup_on:
            a = self.setting.alpha
            lam = torch.where(mixed & ~use_cutmix, sample_beta(a, a, draws, g), lam)
        boxes = None
        if self._cutmix_on:
            assert image_hw is not None  # refused above
            boxes = self._boxes(draws, image_hw) * use_cutmix[:, None]
            height, width = image_hw
            area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
            lam = torch.where(use_cutmix, 1 - area.double() / (height * width), lam)
            if not bool(use_cutmix.any()):
                boxes = None

        def spread(t: Tensor) -> Tensor:
            """From one row per draw to one row per element."""
            if mode == "batch":
                return t.expand(batch, *t.shape[1:]).clone()
            if mode == "pair":
                return torch.cat([t, t.flip(0)])
            return t

        return MixParams(
            lam=spread(lam).to(torch.float32),
            cutmix=spread(use_cutmix),
            boxes=None if boxes is None else spread(boxes),
            image_hw=image_hw,
        )

    def _boxes(self, count: int, image_hw: tuple[int, int]) -> Tensor:
        """``count`` CutMix boxes (count, 4) int64 ``y0, y1, x0, x1`` for images of ``image_hw``."""
        g = self.generator
        height, width = image_hw
        size = torch.tensor([height, width], device=g.device)
        minmax = self.setting.cutmix_minmax
        if minmax is None:
            a = self.setting.cutmix_alpha
            ratio = torch.sqrt(1 - sample_beta(a, a, count, g))[:, None].expand(count, 2)
            cut = torch.floor(ratio * size).long()
            centre = torch.stack(
                [
                    torch.randint(0, height, (count,), generator=g, device=g.device),
                    torch.randint(0, width, (count,), generator=g, device=g.device),
                ],
                dim=1,
            )
            start = centre - cut // 2  # below H, W as the centre is: only clipped at 0
            low = start.clamp(min=0)
            high = torch.minimum(start + cut, size)
        else:
            lo, hi = minmax
            ratio = lo + (hi - lo) * torch.rand(
                count, 2, generator=g, dtype=torch.float64, device=g.device
            )
            cut = torch.floor(ratio * size).long()
            room = size - cut
            offset = torch.rand(count, 2, generator=g, dtype=torch.float64, device=g.device)
            low = torch.minimum(torch.floor(offset * (room + 1)).long(), room)
            high = low + cut
        return torch.stack([low[:, 0], high[:, 0], low[:, 1], high[:, 1]], dim=1)

    def mix_images(self, x: Tensor, p: MixParams) -> Tensor:
        """(B, C, H, W) float images mixed as drawn in ``p``: mixup elements become
        ``lam * x + (1 - lam) * x.flip(0)``, CutMix elements take their partner's pixels inside
        their box. Returns ``x`` itself when nothing is mixed."""
        if x.dim() != 4 or not x.is_floating_point():
            what = f"got a {x.dtype} tensor of shape {tuple(x.shape)}"
            if self._cutmix_on:
                raise CutMixInputError(_CUTMIX_NEEDS_IMAGES.format(what=what))
            raise MixupError(
                f"mix_images takes (batch, channels, height, width) float images, {what}; mix "
                "other inputs (token embeddings) with mix_features"
            )
        self._check_batch(x, p)
        if bool((p.lam >= 1).all()):
            return x
        shape = (x.shape[0], 1, 1, 1)
        lam = p.lam.to(device=x.device, dtype=x.dtype).view(shape)
        partner = x.flip(0)
        is_mixup = (~p.cutmix & (p.lam < 1)).to(x.device).view(shape)
        out = torch.where(is_mixup, x * lam + partner * (1 - lam), x)
        if p.boxes is None:
            return out
        if tuple(x.shape[-2:]) != p.image_hw:
            raise MixupError(
                f"the CutMix boxes were drawn for {p.image_hw} images, not {tuple(x.shape[-2:])}"
            )
        boxes = p.boxes.to(x.device)
        rows = torch.arange(x.shape[-2], device=x.device)
        cols = torch.arange(x.shape[-1], device=x.device)
        in_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 1:2])
        in_cols = (cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:4])
        in_box = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
        return torch.where(in_box, partner, out)

    def mix_features(self, x: Tensor, p: MixParams) -> Tensor:
        """Any (B, ...) float tensor mixed by mixup as drawn in ``p``:
        ``lam * x + (1 - lam) * x.flip(0)`` per element. For token inputs the training loop
        applies it to the embedding module's output from a forward hook (a hook that returns a
        tensor replaces the output). CutMix draws are refused. Returns ``x`` itself when nothing is
        mixed."""
        if not x.is_floating_point():
            raise MixupError(
                f"mix_features mixes float features (embeddings), not a {x.dtype} tensor"
            )
        self._check_batch(x, p)
        if bool(p.cutmix.any()):
            what = f"mix_features got CutMix draws for a tensor of shape {tuple(x.shape)}"
            raise CutMixInputError(_CUTMIX_NEEDS_IMAGES.format(what=what))
        if bool((p.lam >= 1).all()):
            return x
        lam = p.lam.to(device=x.device, dtype=x.dtype).view(x.shape[0], *[1] * (x.dim() - 1))
        return x * lam + x.flip(0) * (1 - lam)

    def targets(self, y: Tensor, p: MixParams) -> Tensor:
        """(B,) class indices as (B, classes) float32 soft targets: label-smoothed one-hot rows
        mixed as ``lam * t + (1 - lam) * t.flip(0)`` per element (each row sums to 1)."""
        if y.dim() != 1 or y.shape[0] != p.lam.shape[0]:
            raise ValueError(
                f"targets take ({p.lam.shape[0]},) class indices, not shape {tuple(y.shape)}"
            )
        t = smooth_one_hot(y, self.classes, self.setting.label_smoothing)
        lam = p.lam.to(device=y.device, dtype=torch.float32)[:, None]
        return lam * t + (1 - lam) * t.flip(0)

    @staticmethod
    def _check_batch(x: Tensor, p: MixParams) -> None:
        if x.shape[0] != p.lam.shape[0]:
            raise ValueError(
                f"the mixing was drawn for a batch of {p.lam.shape[0]}, not {x.shape[0]}"
            )
