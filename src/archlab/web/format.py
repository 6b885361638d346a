"""Values as the pages show them (Jinja filters): numbers to four significant digits as
``arch runs`` prints them, a CV mean with its sample std, config and tag values as JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from archlab.jsonpolicy import jsonable


def num(value: Any) -> str:
    """A metric value to four significant digits; ``-`` for none, ``nan`` for NaN."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return str(value)


def mean_std(mean: float | None, std: float | None, n: int | None = None) -> str:
    """A mean over folds with its sample std, or the mean alone where the std is undefined (one
    fold): never a "± 0" that looks like agreement."""
    if std is None:
        return f"{num(mean)} ({n} fold)" if n == 1 else num(mean)
    return f"{num(mean)} ± {num(std)}"


def value_text(value: Any) -> str:
    """A config, tag or mixup value as text: JSON, except plain strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return num(value) if not value.is_integer() else f"{value:g}"
    return json.dumps(jsonable(value))


def pretty_json(value: Any) -> str:
    """``value`` as indented strict JSON (escaped by the template, never by hand)."""
    return json.dumps(jsonable(value), indent=2, allow_nan=False)


FILTERS = {"num": num, "mean_std": mean_std, "value_text": value_text, "pretty_json": pretty_json}
