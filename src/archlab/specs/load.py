"""Loading specs: JSON text -> upgraded dict -> validated, graph-checked, frozen ``Spec``.

Loading is pure data handling: it never imports torch and never executes anything from the file.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archlab.specs.errors import ErrorList, SpecError, format_path
from archlab.specs.models import Block, DecoderNode, EncoderNode, Spec
from archlab.specs.upgrade import upgrade

SpecSource = str | os.PathLike[str] | Mapping[str, Any] | Spec


def load_spec(source: SpecSource) -> Spec:
    """Load and check a spec.

    ``source`` is a path to a JSON file, a JSON string, a dict, or an already loaded ``Spec``.
    Returns a frozen ``Spec``; raises ``SpecError`` listing every problem with its JSON path.
    """
    if isinstance(source, Spec):
        return source
    data, origin = _read(source)
    spec = parse_spec(data, origin)
    from archlab.compiler.graph import check_graph  # torch-free; imported late to keep layers apart

    check_graph(spec, source=origin)
    return spec


def parse_spec(data: Any, origin: str | None = None) -> Spec:
    """Validate a spec document's structure (no graph checks). Raises ``SpecError``."""
    if not isinstance(data, Mapping):
        raise SpecError([("", f"a spec is a JSON object, not {type(data).__name__}")], origin)
    data = upgrade(dict(data), origin)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(translate_errors(exc, data), origin) from None
    errors = ErrorList()
    check_overrides(spec, data, errors)
    errors.raise_if_any(origin)
    return spec


def _read(source: SpecSource) -> tuple[Any, str | None]:
    if isinstance(source, Mapping):
        return source, None
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and not source.lstrip().startswith("{")
    ):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError([("", f"no such file: {path}")], str(path)) from None
        except IsADirectoryError:
            raise SpecError([("", f"{path} is a directory, not a spec file")], str(path)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError([("", f"cannot read {path}: {exc}")], str(path)) from None
        return parse_json(text, str(path)), str(path)
    return parse_json(str(source), None), None


def parse_json(text: str, origin: str | None = None) -> Any:
    """``json.loads`` that reports line and column, and refuses duplicate keys."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise _DuplicateKeyError(key)
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise SpecError([("", message)], origin) from None
    except _DuplicateKeyError as exc:
        raise SpecError(
            [("", f"invalid JSON: key {exc.key!r} appears twice in one object")], origin
        ) from None


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


# ----------------------------------------------------------------------------- error translation


def translate_errors(
    exc: ValidationError, data: Any, prefix: tuple[str | int, ...] = ()
) -> list[tuple[str, str]]:
    """pydantic errors -> ``(dotted path, message)`` with paths into the user's document."""
    out = []
    for err in exc.errors():
        loc = _user_loc(data, err["loc"], err["type"])
        out.append((format_path(prefix + loc), _message(err, loc)))
    return out


def _user_loc(data: Any, loc: tuple[Any, ...], err_type: str) -> tuple[str | int, ...]:
    """Drop pydantic's union tags and validator names: keep only steps into the document."""
    out: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if (isinstance(cur, Mapping) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        ):
            out.append(part)
            cur = cur[part]
        elif last and err_type == "missing" and isinstance(cur, Mapping) and isinstance(part, str):
            out.append(part)
    return tuple(out)


def _all_field_names() -> set[str]:
    names: set[str] = set()

    def visit(model: Any) -> None:
        for name, field in model.model_fields.items():
            names.add(field.alias or name)
            for sub in _models_in(field.annotation):
                if sub not in seen:
                    seen.add(sub)
                    visit(sub)

    seen: set[Any] = {Spec}
    visit(Spec)
    return names


def _models_in(annotation: Any) -> list[Any]:
    from typing import get_args

    from pydantic import BaseModel

    found = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


_FIELD_NAMES: set[str] | None = None


def _suggest(key: str) -> str:
    global _FIELD_NAMES
    if _FIELD_NAMES is None:
        _FIELD_NAMES = _all_field_names()
    close = difflib.get_close_matches(key, sorted(_FIELD_NAMES), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _show(value: Any) -> str:
    text = (
        json.dumps(value)
        if isinstance(value, str | int | float | bool | type(None))
        else repr(value)
    )
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: Any, loc: tuple[str | int, ...]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    field = loc[-1] if loc else "spec"
    if kind == "missing":
        return f"{field!r} is required"
    if kind == "extra_forbidden":
        return f"unknown key {field!r}{_suggest(str(field))}"
    if kind == "union_tag_invalid":
        expected = ctx.get("expected_tags", "")
        return f"unknown {ctx.get('discriminator', 'kind').strip(chr(39))} {ctx.get('tag')!r}; expected one of {expected}"
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "kind")).strip("'")
        return f"{disc!r} is required here to say which kind of object this is"
    if kind == "literal_error":
        return f"{_show(value)} is not one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return (
            f"{_show(value)} is not a valid id: use letters, digits and '_', "
            "not starting with a digit"
        )
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind in ("too_short", "too_long"):
        return f"{err['msg'][0].lower()}{err['msg'][1:]}"
    msg = err["msg"]
    return f"{msg[0].lower()}{msg[1:]} (got {_show(value)})"


# ---------------------------------------------------------------------------------- overrides


def merge_block(base: Mapping[str, Any], partial: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge a partial block into a block (both as JSON dicts).

    Objects merge key by key, except that an object whose ``kind`` differs, or a string form,
    replaces what was there (switching a mask from causal to a sliding window starts afresh).
    """
    out = dict(base)
    for key, value in partial.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            if "kind" in value and "kind" in old and value["kind"] != old["kind"]:
                out[key] = dict(value)
            else:
                out[key] = merge_block(old, value)
        else:
            out[key] = value
    return out


def check_overrides(spec: Spec, data: Mapping[str, Any], errors: ErrorList) -> None:
    """Every override, merged into its block, must give a valid block; errors point at it."""
    for node_id, node in spec.nodes.items():
        if not isinstance(node, EncoderNode | DecoderNode) or not node.overrides:
            continue
        overrides = node.overrides
        base = node.block.model_dump(mode="json", exclude_unset=True)
        for k, override in enumerate(overrides):
            path = ("nodes", node_id, "overrides", k)
            out_of_range = [i for i in override.layers if i >= node.depth]
            if out_of_range:
                errors.add(
                    (*path, "layers"),
                    f"layer(s) {out_of_range} outside the stack (depth {node.depth}: layers 0-{node.depth - 1})",
                )
            merged = merge_block(base, override.partial)
            try:
                Block.model_validate(merged)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = _user_loc(merged, err["loc"], err["type"])
                    owned = _in_partial(override.partial, loc)
                    where = (*path, *loc) if owned else ("nodes", node_id, "block", *loc)
                    errors.add(where, f"{_message(err, loc)} (in layers {override.layers})")


def _in_partial(partial: Mapping[str, Any], loc: tuple[str | int, ...]) -> bool:
    """Whether the override itself set the (top-level) block key an error points into."""
    return bool(loc) and loc[0] in partial
