"""archlab's one policy for values JSON has no literal for (see docs/query-language.md, "NaN and
infinity in JSON"): NaN and the infinities become the strings ``"nan"``, ``"inf"`` and ``"-inf"``
(``null`` stays "no value"), tuples become lists, keys strings, and other objects their ``str()``.
Stored run configs and every JSON or CSV output go through ``jsonable``, so a value reads the same
in the registry, in ``arch runs`` output and in exports, and strict JSON readers (PostgreSQL's
included) take it."""

from __future__ import annotations

import json
from typing import Any

NON_FINITE = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}
"""The JSON spelling Python's ``json`` writes for each non-finite float -> archlab's string."""


def jsonable(value: Any) -> Any:
    """``value`` as plain, strict JSON data (see the module's policy)."""
    return json.loads(json.dumps(value, default=str), parse_constant=NON_FINITE.__getitem__)
