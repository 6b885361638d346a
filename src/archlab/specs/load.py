"""Loading specs: JSON text -> upgraded dict -> validated, graph-checked, frozen ``Spec``.

Loading is pure data handling: it never imports torch and never executes anything from the file.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from archlab.specs.analysis import check_graph
from archlab.specs.errors import ErrorList, SpecError, format_path
from archlab.specs.models import BLOCK_FIELDS, MAX_SIZE, Block, DecoderNode, EncoderNode, Spec
from archlab.specs.overrides import merged_block
from archlab.specs.upgrade import upgrade

SpecSource = str | os.PathLike[str] | Mapping[str, Any] | Spec


def load_spec(source: SpecSource) -> Spec:
    """Load and check a spec.

    ``source`` is a path to a JSON file, a JSON string, a dict, or an already loaded ``Spec``.
    Returns a frozen ``Spec``; raises ``SpecError`` listing every problem with its JSON path.
    """
    if isinstance(source, Spec):
        # a Spec built with Spec.model_validate skipped the loader's checks: run them (cheap)
        data, origin = source.model_dump(mode="json", by_alias=True, exclude_unset=True), None
    else:
        data, origin = _read(source)
    spec = parse_spec(data, origin)
    check_graph(spec, source=origin)
    return source if isinstance(source, Spec) else spec


def parse_spec(data: Any, origin: str | None = None) -> Spec:
    """Validate a spec document's structure (no graph checks). Raises ``SpecError``."""
    if not isinstance(data, Mapping):
        raise SpecError([("", f"a spec is a JSON object, not {type(data).__name__}")], origin)
    bad_text = _lone_surrogate(data)
    if bad_text is not None:
        raise SpecError(
            [
                (
                    format_path(bad_text),
                    "text holds a lone UTF-16 surrogate (an escape such as \\ud800 with no pair), "
                    "which is not a Unicode character; remove it",
                )
            ],
            origin,
        )
    data = upgrade(dict(data), origin)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(translate_errors(exc, data), origin) from None
    errors = ErrorList()
    check_overrides(spec, data, errors)
    errors.raise_if_any(origin)
    return spec


def _lone_surrogate(data: Any) -> tuple[str | int, ...] | None:
    """The path of the first string (value or key) holding a lone surrogate, else None."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return loc
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and _SURROGATE.search(key):
                    return (*loc, key.encode("utf-8", "backslashreplace").decode())
                stack.append(((*loc, key), item))
        elif isinstance(value, list | tuple):
            stack.extend(((*loc, i), item) for i, item in enumerate(value))
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _read(source: SpecSource) -> tuple[Any, str | None]:
    if isinstance(source, Mapping):
        return source, None
    if isinstance(source, str) and not source.strip():
        raise SpecError([("", "empty spec: give a path to a JSON file or the JSON text")])
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and not source.lstrip().startswith("{")
    ):
        path = Path(source)
        if isinstance(source, str) and not path.exists() and _looks_like_json(source):
            return parse_json(source, None), None
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except FileNotFoundError:
            raise SpecError([("", f"no such file: {path}")], str(path)) from None
        except IsADirectoryError:
            raise SpecError([("", f"{path} is a directory, not a spec file")], str(path)) from None
        except UnicodeDecodeError as exc:
            raise SpecError([("", _not_utf8(exc))], str(path)) from None
        except OSError as exc:
            raise SpecError([("", f"cannot read {path}: {exc}")], str(path)) from None
        return parse_json(text, str(path)), str(path)
    return parse_json(str(source), None), None


def _looks_like_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _not_utf8(exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8, as line and column."""
    before = exc.object[: exc.start]
    line = before.count(b"\n") + 1
    column = exc.start - (before.rfind(b"\n") + 1) + 1
    return (
        f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at line {line}, column {column} "
        "cannot be decoded; save the spec as UTF-8"
    )


def parse_json(text: str, origin: str | None = None) -> Any:
    """``json.loads`` that reports line and column, and refuses duplicate keys."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise _DuplicateKeyError(key)
            out[key] = value
        return out

    def no_constants(name: str) -> Any:
        raise _NotJsonError(name)

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise SpecError([("", message)], origin) from None
    except RecursionError:
        message = (
            "JSON arrays and objects nested too deeply to read (a spec needs fewer than ten levels)"
        )
        raise SpecError([("", message)], origin) from None
    except ValueError as exc:  # int("9" * 5000): more digits than Python converts
        if "integer string conversion" not in str(exc):
            raise
        message = (
            f"a JSON number with more than {sys.get_int_max_str_digits()} digits; "
            f"no size in a spec needs more than {len(str(MAX_SIZE))}"
        )
        raise SpecError([("", message)], origin) from None
    except _NotJsonError as exc:
        message = f"invalid JSON: {exc.args[0]} is not a JSON number; write a finite number"
        raise SpecError([("", message)], origin) from None
    except _DuplicateKeyError as exc:
        raise SpecError(
            [("", f"invalid JSON: key {exc.key!r} appears twice in one object")], origin
        ) from None


class _NotJsonError(Exception):
    """``NaN``, ``Infinity`` or ``-Infinity``, which Python's json accepts and JSON does not."""


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
        out.append((format_path(prefix + loc), validation_message(err, loc)))
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


def _options(annotation: Any) -> list[Any]:
    """The alternatives of a type: ``Annotated`` unwrapped, unions flattened."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _options(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return [o for arg in get_args(annotation) for o in _options(arg)]
    return [annotation]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _fields(model: Any) -> dict[str, Any]:
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _step(annotation: Any, part: str | int) -> list[Any]:
    """Where one step of a pydantic error location leads inside the spec's types."""
    out: list[Any] = []
    for option in _options(annotation):
        if _is_model(option):
            fields = _fields(option)
            if part in fields:
                out.append(fields[part].annotation)
            elif any(part in get_args(f.annotation) for n, f in fields.items() if n in _TAGS):
                out.append(option)  # a discriminated union's tag: the model it selects
        elif get_origin(option) is dict and isinstance(part, str):
            out.append(get_args(option)[1])
        elif get_origin(option) in (list, tuple) and isinstance(part, int):
            out.append(get_args(option)[0])
    return out


_TAGS = ("op", "kind", "method")


def _models_at(root: Any, raw_loc: tuple[Any, ...]) -> list[Any]:
    """The models an error location points into (several while a union is undecided)."""
    current = [root]
    for part in raw_loc:
        following = [t for tp in current for t in _step(tp, part)]
        if following:  # steps that lead nowhere are validator names; skip them
            current = following
    return [o for tp in current for o in _options(tp) if _is_model(o)]


def _suggest(key: str, root: Any, raw_loc: tuple[Any, ...]) -> str:
    """A did-you-mean from the keys of the object at hand, or where a known key belongs."""
    models = _models_at(root, raw_loc)
    names = sorted({name for model in models for name in _fields(model)})
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    for model in models:
        for name, field in _fields(model).items():
            if any(_is_model(o) and key in _fields(o) for o in _options(field.annotation)):
                return f"; {key!r} belongs in {name!r}"
    return ""


def _show(value: Any) -> str:
    text = (
        json.dumps(value)
        if isinstance(value, str | int | float | bool | type(None))
        else repr(value)
    )
    return text if len(text) <= 60 else text[:57] + "..."


def validation_message(err: Any, loc: tuple[str | int, ...], root: Any = Spec) -> str:
    """One pydantic validation error ``err`` (at ``loc``) in archlab's words; unknown keys get a
    suggestion from the fields of ``root`` (the model validated: a spec, a block, a config)."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    field = loc[-1] if loc else "spec"
    if kind == "missing":
        return f"{field!r} is required"
    if kind == "extra_forbidden":
        return f"unknown key {field!r}{_suggest(str(field), root, tuple(err['loc'][:-1]))}"
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
    hint = _type_hint(kind, value) if kind in _JSON_TYPES else ""
    return f"{msg[0].lower()}{msg[1:]} (got {_show(value)}){hint}"


_JSON_TYPES = {"int_type", "float_type", "bool_type", "string_type"}


def _type_hint(kind: str, value: Any) -> str:
    """How to write the JSON type asked for, when the value written looks like one it is not."""
    if isinstance(value, str) and kind != "string_type" and _looks_like_json(value.strip() or '""'):
        return "; write it without quotes"
    if isinstance(value, bool) and kind in ("int_type", "float_type"):
        return "; true and false are not numbers"
    if isinstance(value, int | float) and not isinstance(value, bool) and kind == "bool_type":
        return "; write true or false"
    return ""


# ---------------------------------------------------------------------------------- overrides


def check_overrides(spec: Spec, data: Mapping[str, Any], errors: ErrorList) -> None:
    """Every override, merged into its block, must give a valid block; errors point at it."""
    for node_id, node in spec.nodes.items():
        if not isinstance(node, EncoderNode | DecoderNode) or not node.overrides:
            continue
        overrides = node.overrides
        for k, override in enumerate(overrides):
            path = ("nodes", node_id, "overrides", k)
            out_of_range = [i for i in override.layers if i >= node.depth]
            if out_of_range:
                errors.add(
                    (*path, "layers"),
                    f"layer(s) {out_of_range} outside the stack (depth {node.depth}: layers 0-{node.depth - 1})",
                )
            for key in sorted(set(override.partial) - BLOCK_FIELDS):
                errors.add((*path, key), f"unknown key {key!r}{_suggest(key, Block, ())}")
            if not set(override.partial) <= BLOCK_FIELDS:
                continue
            merged = merged_block(node, (k,))
            try:
                Block.model_validate(merged)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = _user_loc(merged, err["loc"], err["type"])
                    owned = _in_partial(override.partial, loc)
                    where = (*path, *loc) if owned else ("nodes", node_id, "block", *loc)
                    errors.add(
                        where,
                        f"{validation_message(err, loc, Block)} (in layers {override.layers})",
                    )


def _in_partial(partial: Mapping[str, Any], loc: tuple[str | int, ...]) -> bool:
    """Whether the override itself set the (top-level) block key an error points into."""
    return bool(loc) and loc[0] in partial
