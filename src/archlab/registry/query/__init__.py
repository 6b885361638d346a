"""The registry's query language: ``--where`` filters and ``--sort`` keys, compiled to SQLAlchemy.

A query such as ``metrics.val_acc > 0.9 and (mixup.alpha >= 0.2 or cv.k == 5) and spec.name like
'vit%'`` is tokenised and parsed by hand (recursive descent) into a small AST (``parse``), then
compiled into a boolean expression over ``RunRow`` (``compile_where``). Values only ever reach the
database as bound parameters; nothing the user types is pasted into SQL.

Modules, in the order a query passes through them: ``lexer`` (tokens), ``parser`` (the AST of
``nodes``, field names checked against ``fields``, literals against ``literals``), ``sql``
(``compile_where`` and ``order_by``), ``sources`` (where each field's value lives in the tables) and
``jsonsql`` (per-backend JSON type checks); ``errors`` holds ``QueryError``.

Grammar (keywords are case-insensitive)::

    query      = or_expr ;
    or_expr    = and_expr { "or" and_expr } ;
    and_expr   = not_expr { "and" not_expr } ;
    not_expr   = "not" not_expr | "(" or_expr ")" | comparison ;
    comparison = field ( cmp_op value
                       | [ "not" ] "in" "(" value { "," value } [ "," ] ")"
                       | [ "not" ] "like" string ) ;
    cmp_op     = "==" | "=" | "!=" | "<" | "<=" | ">" | ">=" ;
    value      = string | number | "true" | "false" | "null" ;
    field      = "status" | "kind" | "id" | "started" | "ended"
               | ( "metrics" | "best" | "mean" | "std" | "min" | "max" | "n" ) "." name
               | "config" "." part { "." part } | "tags" "." name
               | "mixup" "." mixup_field | "cv" "." ( "k" | "fold" | "group" )
               | "spec" "." ( "name" | "hash" ) ;
    name       = part { "." part } ;                 (* metric / tag names may hold dots *)
    part       = word | string ;                     (* word: [A-Za-z0-9_]+, joined by "/" or "-" *)
    mixup_field = "alpha" | "cutmix_alpha" | "cutmix_min" | "cutmix_max" | "prob"
               | "switch_prob" | "mode" | "label_smoothing" | "off_epoch" ;
    string     = "'" chars "'" | '"' chars '"' ;     (* \\' \\" \\\\ escape; other \\ is literal *)
    number     = [ "+" | "-" ] ( digits [ "." [ digits ] ] | "." digits ) [ ( "e" | "E" ) [ "+" | "-" ] digits ] ;
    sort_key   = [ "+" | "-" ] field ;               (* order_by; "-" sorts descending *)

Semantics, in short:

- ``metrics.X`` is the run's final value of metric X, ``best.X`` its best; ``mean/std/min/max/n.X``
  are the aggregates of the run's CV group; ``config.a.b`` walks the run's JSON config (a bare
  number part indexes an array: ``config.layers.0``; a quoted part is one key: ``config.'a.b'``).
  Names that are not words go in quotes: ``metrics.'acc@1'``, ``tags."my key"``.
- A ``config`` value compares as the literal's JSON type (number, string, true/false).
- Logic is SQL's three-valued logic: a comparison on a field the run lacks (no such metric, no
  mixup, no CV group, a config value of another JSON type) is *unknown*, so it and its ``not`` are
  both false. ``field == null`` / ``field != null`` test presence and are never unknown.
- ``like`` is case-insensitive on every backend (SQLite folds ASCII letters only); ``%`` and ``_``
  are wildcards, ``\\`` escapes them.
- ``started``/``ended`` take epoch seconds or ISO 8601 strings (naive ones in local time).
- Text fields compare a number literal with its text as written (``tags.seed == 3``).
"""

from __future__ import annotations

from archlab.registry.query.errors import QueryError
from archlab.registry.query.fields import FIELDS
from archlab.registry.query.nodes import And, Compare, Expr, FieldRef, Not, Or, Value
from archlab.registry.query.parser import parse
from archlab.registry.query.sql import compile_where, order_by

__all__ = [
    "FIELDS",
    "And",
    "Compare",
    "Expr",
    "FieldRef",
    "Not",
    "Or",
    "QueryError",
    "Value",
    "compile_where",
    "order_by",
    "parse",
]
