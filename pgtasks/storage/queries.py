"""Named SQL queries, loaded from pgtasks/sql/*.sql and rendered for one schema."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import LiteralString, cast

from pgtasks.core.channels import jobs_channel
from pgtasks.core.errors import ConfigurationError

_NAME_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
# `{include:_fragment}` in a query is replaced by the named section `_fragment` (a name that starts
# with an underscore is a fragment: included, never run on its own), so a WHERE clause shared by
# several queries is written once.
_INCLUDE = re.compile(r"\{include:(\w+)\}")
# Schema names are interpolated into SQL text, so they are restricted to plain identifiers.
# 50 characters leaves room for the ".jobs" NOTIFY channel inside Postgres' 63-byte limit.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")


def validate_schema_name(schema: str) -> str:
    """Return `schema` if it is a safe, unquoted Postgres identifier, else raise ConfigurationError."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(
            f"schema={schema!r} is not a valid pgtasks schema name: use 1-50 characters of lowercase "
            "letters, digits and underscores, starting with a letter or underscore (e.g. 'pgtasks')"
        )
    return schema


def render(text: str, schema: str) -> LiteralString:
    """Substitute the schema placeholders of one SQL text.

    The cast is sound because `schema` passed validate_schema_name(): it is a plain identifier,
    so the rendered text is as trusted as the literal it came from.
    """
    validate_schema_name(schema)
    rendered = text.replace("{schema}", f'"{schema}"').replace("{channel}", f"'{jobs_channel(schema)}'")
    return cast(LiteralString, rendered)  # type: ignore[redundant-cast] # mypy treats LiteralString as str


def parse_named_queries(text: str) -> dict[str, str]:
    """Split a file of `-- name: x` sections into {name: sql}."""
    parts = _NAME_HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def _raw_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for entry in sorted(resources.files("pgtasks.sql").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, body in parse_named_queries(entry.read_text(encoding="utf-8")).items():
                if name in queries:
                    raise ValueError(f"query {name!r} is defined in more than one file")
                queries[name] = body
    return expand_includes(queries)


def expand_includes(sections: dict[str, str]) -> dict[str, str]:
    """The queries of `sections` with each `{include:_name}` replaced by fragment `_name`'s text (a
    fragment may include another)."""
    def fragment(match: re.Match[str]) -> str:
        name = match[1]
        if not name.startswith("_") or name not in sections:
            raise ValueError(f"{{include:{name}}}: no fragment named {name!r} (fragments' names start with _)")
        return _INCLUDE.sub(fragment, sections[name])
    return {name: _INCLUDE.sub(fragment, body) for name, body in sections.items() if not name.startswith("_")}


@cache
def queries_for(schema: str) -> dict[str, LiteralString]:
    """Every named query, rendered for `schema`."""
    return {name: render(body, schema) for name, body in _raw_queries().items()}
