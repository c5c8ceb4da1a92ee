"""PostgreSQL helpers shared by the benchmarks (not a benchmark itself).

Every benchmark run gets schemas of its own (`?schema=NAME` in the store URL, see
`maas_lib.store.open_store`), dropped afterwards, so runs never see each other's rows
and the database named by --pg is left as it was.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from maas_lib.store.pg_url import parse_pg_url

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def add_pg_arguments(ap: argparse.ArgumentParser) -> None:
    """--pg URL (default $MAAS_BENCH_PG or the local test database) and --no-pg."""
    ap.add_argument(
        "--pg",
        default=os.environ.get("MAAS_BENCH_PG") or DEFAULT_PG,
        metavar="URL",
        help="PostgreSQL database for the _pg figures (default: $MAAS_BENCH_PG or "
        f"{DEFAULT_PG}); each run uses fresh schemas in it and drops them",
    )
    ap.add_argument("--no-pg", action="store_true", help="SQLite figures only")


def with_schema(url: str, schema: str) -> str:
    """`url` with its `schema` query parameter set to `schema` (replacing any)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    query.append(("schema", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def conninfo(url: str) -> str:
    """What libpq gets for `url`: our own `schema` parameter removed."""
    return parse_pg_url(url).conninfo


def unreachable(url: str) -> str | None:
    """None if `url` accepts a connection and a query, else why not (password scrubbed)."""
    target = parse_pg_url(url)
    try:
        with psycopg.connect(target.conninfo, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{target.url}: {target.scrub(exc)}"
    return None


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def checkpoint(url: str) -> bool:
    """Write PostgreSQL's dirty pages out now (a CHECKPOINT), so a timed part does not
    pay for the writes of what ran before it (a seeded fleet, a dropped schema); False
    if this role may not (PostgreSQL 15: superuser or pg_checkpoint)."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            return False
    return True


@contextmanager
def fresh_schema(url: str, label: str) -> Iterator[str]:
    """A store URL on a new schema `bench_<label>_<random>` of `url`'s database; the
    schema (created by the store when first opened) is dropped on the way out."""
    schema = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    try:
        yield with_schema(url, schema)
    finally:
        drop_schema(url, schema)


@contextmanager
def schema_connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A raw psycopg connection (autocommit) whose search_path is `url`'s schema."""
    target = parse_pg_url(url)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        if target.schema:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema)))
        yield conn


def target(args: argparse.Namespace) -> tuple[str, bool]:
    """The `pg` figure for `add_pg_arguments`' options, and whether to measure: the URL
    (password hidden) and True, or "skipped: <why>" and False."""
    if args.no_pg:
        return "skipped: --no-pg", False
    if reason := unreachable(args.pg):
        return f"skipped: {reason}", False
    return parse_pg_url(args.pg).url, True
