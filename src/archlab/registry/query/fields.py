"""The fields a query can name (``metrics.<name>``, ``cv.k``, ``status``...) and the type of
literal each compares with."""

from __future__ import annotations

MIXUP_FIELDS = (
    "alpha",
    "cutmix_alpha",
    "cutmix_min",
    "cutmix_max",
    "prob",
    "switch_prob",
    "mode",
    "label_smoothing",
    "off_epoch",
)
_PLAIN = ("status", "kind", "id", "started", "ended")
_METRIC = ("metrics", "best")
_AGGREGATE = ("mean", "std", "min", "max", "n")
_SUBFIELDS: dict[str, tuple[str, ...]] = {
    "mixup": MIXUP_FIELDS,
    "cv": ("k", "fold", "group"),
    "spec": ("name", "hash"),
}
_FREE = (*_METRIC, *_AGGREGATE, "config", "tags")  # prefixes followed by any name

#: Every field form, as shown in error messages and help text.
FIELDS = (
    "metrics.<name>",
    "best.<name>",
    "mean.<name>",
    "std.<name>",
    "min.<name>",
    "max.<name>",
    "n.<name>",
    "config.<key>[.<key>...]",
    "tags.<key>",
    "mixup.<" + "|".join(MIXUP_FIELDS) + ">",
    "cv.<k|fold|group>",
    "spec.<name|hash>",
    *_PLAIN,
)


def _field_type(prefix: str, key: str | None) -> str:
    """``number``, ``text``, ``time`` or ``json``: what literals a field compares with."""
    if prefix in _METRIC or prefix in _AGGREGATE:
        return "number"
    if prefix == "config":
        return "json"
    if prefix in ("started", "ended"):
        return "time"
    if prefix == "mixup":
        return "text" if key == "mode" else "number"
    if prefix == "cv":
        return "text" if key == "group" else "number"
    return "text"  # status, kind, id, tags, spec
