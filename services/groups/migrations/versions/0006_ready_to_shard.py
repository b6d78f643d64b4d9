"""Ready to shard by owner (ADR 0014): every table's key leads with its owner or store.

* A store's owner key becomes its id; a streamer's becomes ``streamer/<id>``
  (no id holds ``/``). Groups' store tables (``store_id``) then hold the same
  value as the owner tables.
* ``group_sets`` is keyed by ``(owner_key, id)``. Its sub-groups, members,
  first joins, join requests, admins and removals carry ``owner_key`` at the
  head of their keys, with foreign keys on both columns.
* ``audit_entries`` and ``removals`` are keyed by ``(owner_key, id)``, and their
  ids are minted in time order by the service (``services.common.ids.ordered_id``).
  Rows copied here keep their ids.
* ``group_set_owners`` is a reference table from a set's id to its owner, for
  calls that name only the set.
* A job's settlements are keyed by the store first.
* ``qun_join`` takes the set's owner as its first argument and names it in
  every statement, so a sharded database can run it on the owner's node.

The re-keyed tables are built anew, filled from the old ones, and put in their
place. That is one way on SQLite and PostgreSQL alike.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from services.common.migrations import replace_primary_key

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = 64
KEY = 80
NAME = 64
SUB_GROUP_NAME = 80
FINGERPRINT = 64
NEXT = "_next"  # the new tables' names while the old ones exist

# The old owner key (``store:<id>`` or ``streamer:<id>``) as the new one.
NEW_KEY = (
    "CASE WHEN {k} LIKE 'store:%' THEN substr({k}, 7) "
    "WHEN {k} LIKE 'streamer:%' THEN 'streamer/' || substr({k}, 10) ELSE {k} END"
)


def _id(name: str, **kw: object) -> sa.Column:
    return sa.Column(name, sa.String(ID), nullable=False, **kw)  # type: ignore[arg-type]


def _owner() -> sa.Column:
    return sa.Column("owner_key", sa.String(KEY), nullable=False)


def _at(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


# A key's name ends in ``n`` while the old table's key holds its name (PostgreSQL's names are the schema's).
def _in_set(n: str, table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["owner_key", "group_set_id"],
        [f"group_sets{NEXT}.owner_key", f"group_sets{NEXT}.id"],
        name=f"fk_{table}_owner_key_group_sets{n}",
    )


def _pk(n: str, table: str, *columns: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*columns, name=f"pk_{table}{n}")


# name → (columns and keys, unique constraints, indexes, how its rows are copied: a SELECT of the old tables)
Keys = list[tuple[str, list[str]]]  # (name, columns)
Build = tuple[Callable[[str], list[Any]], Keys, Keys, str]

SET_OWNER = NEW_KEY.format(k="g.owner_key")
JOINED = "JOIN group_sets g ON g.id = t.group_set_id"

TABLES: dict[str, Build] = {
    "capacity_owners": (
        lambda n: [
            sa.Column("owner_key", sa.String(KEY), nullable=False),
            sa.Column("kind", sa.String(8), nullable=False),
            sa.Column("member_count", sa.Integer(), nullable=False),
            sa.Column("group_set_count", sa.Integer(), nullable=False),
            sa.Column("extra_members", sa.Integer(), nullable=False, server_default="0"),
            _pk(n, "capacity_owners", "owner_key"),
        ],
        [],
        [],
        f"SELECT {NEW_KEY.format(k='t.owner_key')}, t.kind, t.member_count, t.group_set_count, t.extra_members "
        "FROM capacity_owners t",
    ),
    "group_sets": (
        lambda n: [
            _owner(),
            _id("id"),
            sa.Column("kind", sa.String(8), nullable=False),
            sa.Column("name", sa.String(NAME), nullable=False),
            _id("owner_account_id"),
            sa.Column("store_id", sa.String(ID), nullable=True),
            sa.Column("streamer_id", sa.String(ID), nullable=True),
            sa.Column("threshold_kind", sa.String(16), nullable=False),
            sa.Column("threshold_params", sa.JSON(), nullable=False),
            sa.Column("password_digest", sa.String(255), nullable=False),
            sa.Column("threshold_version", sa.BigInteger(), nullable=False),
            sa.Column("is_public", sa.Boolean(), nullable=False),
            sa.Column("announcement", sa.Text(), nullable=False),
            sa.Column("newcomer_reply", sa.Text(), nullable=False),
            sa.Column("member_count", sa.Integer(), nullable=False),
            sa.Column("sub_group_count", sa.Integer(), nullable=False),
            sa.Column("request_id", sa.String(ID), nullable=True),
            sa.Column("request_fingerprint", sa.String(FINGERPRINT), nullable=True),
            _at("created_at"),
            _at("dissolved_at", nullable=True),
            _pk(n, "group_sets", "owner_key", "id"),
            sa.ForeignKeyConstraint(
                ["owner_key"], [f"capacity_owners{NEXT}.owner_key"], name="fk_group_sets_owner_key_capacity_owners" + n
            ),
        ],
        [("uq_group_sets_owner_request", ["owner_key", "owner_account_id", "request_id"])],
        [("ix_group_sets_owner_listing", ["owner_key", "created_at", "id"])],
        f"SELECT {SET_OWNER}, g.id, g.kind, g.name, g.owner_account_id, g.store_id, g.streamer_id, "
        "g.threshold_kind, g.threshold_params, g.password_digest, g.threshold_version, g.is_public, "
        "g.announcement, g.newcomer_reply, g.member_count, g.sub_group_count, g.request_id, "
        "g.request_fingerprint, g.created_at, g.dissolved_at FROM group_sets g",
    ),
    "group_set_owners": (
        lambda n: [_id("group_set_id"), _owner(), _pk(n, "group_set_owners", "group_set_id")],
        [],
        [],
        f"SELECT g.id, {SET_OWNER} FROM group_sets g",
    ),
    "sub_groups": (
        lambda n: [
            _owner(),
            _id("id"),
            _id("group_set_id"),
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(SUB_GROUP_NAME), nullable=False),
            sa.Column("member_count", sa.Integer(), nullable=False),
            _at("created_at"),
            _pk(n, "sub_groups", "owner_key", "id"),
            _in_set(n, "sub_groups"),
        ],
        [("uq_sub_groups_set_seq", ["owner_key", "group_set_id", "seq"])],
        [],
        f"SELECT {SET_OWNER}, t.id, t.group_set_id, t.seq, t.name, t.member_count, t.created_at "
        f"FROM sub_groups t {JOINED}",
    ),
    "memberships": (
        lambda n: [
            _owner(),
            _id("group_set_id"),
            _id("consumer_id"),
            _id("sub_group_id"),
            sa.Column("request_id", sa.String(ID), nullable=True),
            sa.Column("newcomer_reply", sa.Text(), nullable=False),
            sa.Column("messages_hidden", sa.Boolean(), nullable=False),
            _at("joined_at"),
            _at("last_active_at", nullable=True),
            _at("notified_at", nullable=True),
            _pk(n, "memberships", "owner_key", "group_set_id", "consumer_id"),
            _in_set(n, "memberships"),
            sa.ForeignKeyConstraint(
                ["owner_key", "sub_group_id"],
                [f"sub_groups{NEXT}.owner_key", f"sub_groups{NEXT}.id"],
                name="fk_memberships_owner_key_sub_groups" + n,
            ),
        ],
        [],
        [("ix_memberships_consumer", ["consumer_id", "group_set_id"])],
        f"SELECT {SET_OWNER}, t.group_set_id, t.consumer_id, t.sub_group_id, t.request_id, t.newcomer_reply, "
        f"t.messages_hidden, t.joined_at, t.last_active_at, t.notified_at FROM memberships t {JOINED}",
    ),
    "first_joins": (
        lambda n: [
            _owner(),
            _id("group_set_id"),
            _id("consumer_id"),
            _at("first_joined_at"),
            _pk(n, "first_joins", "owner_key", "group_set_id", "consumer_id"),
            _in_set(n, "first_joins"),
        ],
        [],
        [],
        f"SELECT {SET_OWNER}, t.group_set_id, t.consumer_id, t.first_joined_at FROM first_joins t {JOINED}",
    ),
    "join_requests": (
        lambda n: [
            _owner(),
            _id("group_set_id"),
            _id("consumer_id"),
            _id("request_id"),
            _id("sub_group_id"),
            sa.Column("sub_group_name", sa.String(SUB_GROUP_NAME), nullable=False),
            sa.Column("newcomer_reply", sa.Text(), nullable=False),
            _at("joined_at"),
            _pk(n, "join_requests", "owner_key", "group_set_id", "consumer_id", "request_id"),
            _in_set(n, "join_requests"),
        ],
        [],
        [],
        f"SELECT {SET_OWNER}, t.group_set_id, t.consumer_id, t.request_id, t.sub_group_id, t.sub_group_name, "
        f"t.newcomer_reply, t.joined_at FROM join_requests t {JOINED}",
    ),
    "admins": (
        lambda n: [
            _owner(),
            _id("group_set_id"),
            _id("account_id"),
            _at("added_at"),
            _pk(n, "admins", "owner_key", "group_set_id", "account_id"),
            _in_set(n, "admins"),
        ],
        [],
        [],
        f"SELECT {SET_OWNER}, t.group_set_id, t.account_id, t.added_at FROM admins t {JOINED}",
    ),
    "removals": (
        lambda n: [
            _owner(),
            sa.Column("id", sa.BigInteger(), nullable=False, autoincrement=False),
            _id("consumer_id"),
            _id("group_set_id"),
            sa.Column("cause", sa.String(16), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("barred", sa.Boolean(), nullable=False),
            _id("actor"),
            sa.Column("request_id", sa.String(ID), nullable=True),
            sa.Column("request_fingerprint", sa.String(FINGERPRINT), nullable=True),
            _at("removed_at"),
            _pk(n, "removals", "owner_key", "id"),
            _in_set(n, "removals"),
        ],
        [("uq_removals_request", ["owner_key", "group_set_id", "consumer_id", "request_id"])],
        [("ix_removals_consumer", ["consumer_id", "id"])],
        f"SELECT {SET_OWNER}, t.id, t.consumer_id, t.group_set_id, t.cause, t.reason, t.barred, t.actor, "
        f"t.request_id, t.request_fingerprint, t.removed_at FROM removals t {JOINED}",
    ),
    "audit_entries": (
        lambda n: [
            _owner(),
            sa.Column("id", sa.BigInteger(), nullable=False, autoincrement=False),
            _at("at"),
            _id("actor"),
            sa.Column("action", sa.String(32), nullable=False),
            sa.Column("target", sa.String(KEY), nullable=False),
            sa.Column("old_value", sa.Text(), nullable=False),
            sa.Column("new_value", sa.Text(), nullable=False),
            _pk(n, "audit_entries", "owner_key", "id"),
        ],
        [],
        [],
        f"SELECT {NEW_KEY.format(k='t.owner_key')}, t.id, t.at, t.actor, t.action, t.target, t.old_value, "
        "t.new_value FROM audit_entries t",
    ),
}
# Children before parents, for dropping the old tables.
OLD_TABLES = (
    "memberships",
    "first_joins",
    "join_requests",
    "admins",
    "removals",
    "sub_groups",
    "group_sets",
    "capacity_owners",
    "audit_entries",
)

JOIN_FUNCTION = """
CREATE OR REPLACE FUNCTION qun_join(
    p_owner text, p_set text, p_consumer text, p_version bigint, p_request text, p_hidden boolean, p_now timestamptz,
    p_month text, p_new_sub_id text,
    p_store_sub_cap int, p_store_set_cap int, p_store_max_subs int,
    p_live_sub_cap int, p_live_set_cap int, p_live_max_subs int,
    p_store_members int[], p_max_members int, p_live_members int,
    OUT status text, OUT kind text, OUT sub_group_id text, OUT sub_group_name text,
    OUT new_sub_group boolean, OUT newcomer_reply text
) LANGUAGE plpgsql AS $$
DECLARE
    o capacity_owners%ROWTYPE;
    s group_sets%ROWTYPE;
    sub_cap int; set_cap int; max_subs int; member_cap int; base int; lvl int;
    found_sub sub_groups%ROWTYPE;
    subs int; last_seq int;
    joined_before boolean;
BEGIN
    status := 'fallback';
    SELECT * INTO o FROM capacity_owners WHERE owner_key = p_owner FOR UPDATE;
    IF NOT FOUND THEN RETURN; END IF;
    SELECT * INTO s FROM group_sets WHERE owner_key = p_owner AND id = p_set FOR UPDATE;
    IF NOT FOUND OR s.dissolved_at IS NOT NULL OR s.threshold_version <> p_version THEN RETURN; END IF;
    kind := s.kind;
    IF p_request <> '' AND EXISTS (SELECT 1 FROM join_requests
            WHERE owner_key = p_owner AND group_set_id = p_set AND consumer_id = p_consumer
              AND request_id = p_request) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM memberships
            WHERE owner_key = p_owner AND group_set_id = p_set AND consumer_id = p_consumer) THEN
        RETURN;
    END IF;
    IF s.kind = 'store' THEN
        sub_cap := p_store_sub_cap; set_cap := p_store_set_cap; max_subs := p_store_max_subs;
        SELECT level INTO lvl FROM group_levels
            WHERE store_id = p_owner AND month <= p_month ORDER BY month DESC LIMIT 1;
        base := p_store_members[coalesce(lvl, 0) + 1];
        member_cap := CASE WHEN o.extra_members <= 0 THEN base
                           ELSE least(base + o.extra_members, greatest(base, p_max_members)) END;
    ELSE
        sub_cap := p_live_sub_cap; set_cap := p_live_set_cap; max_subs := p_live_max_subs;
        member_cap := p_live_members;
    END IF;
    IF s.member_count >= set_cap OR o.member_count >= member_cap THEN RETURN; END IF;
    SELECT * INTO found_sub FROM sub_groups
        WHERE owner_key = p_owner AND group_set_id = p_set AND member_count < sub_cap ORDER BY seq LIMIT 1;
    IF FOUND THEN
        UPDATE sub_groups SET member_count = member_count + 1
            WHERE owner_key = p_owner AND id = found_sub.id;
        sub_group_id := found_sub.id; sub_group_name := found_sub.name; new_sub_group := false;
    ELSE
        SELECT count(*), coalesce(max(seq), 0) INTO subs, last_seq FROM sub_groups
            WHERE owner_key = p_owner AND group_set_id = p_set;
        IF subs >= max_subs THEN RETURN; END IF;
        sub_group_id := p_new_sub_id; sub_group_name := s.name || (last_seq + 1)::text; new_sub_group := true;
        INSERT INTO sub_groups (owner_key, id, group_set_id, seq, name, member_count, created_at)
            VALUES (p_owner, p_new_sub_id, p_set, last_seq + 1, sub_group_name, 1, p_now);
    END IF;
    UPDATE group_sets SET member_count = member_count + 1,
                          sub_group_count = sub_group_count + CASE WHEN new_sub_group THEN 1 ELSE 0 END
        WHERE owner_key = p_owner AND id = p_set;
    UPDATE capacity_owners SET member_count = member_count + 1 WHERE owner_key = p_owner;
    joined_before := EXISTS (SELECT 1 FROM first_joins
        WHERE owner_key = p_owner AND group_set_id = p_set AND consumer_id = p_consumer);
    IF joined_before THEN
        newcomer_reply := '';
    ELSE
        newcomer_reply := s.newcomer_reply;
        INSERT INTO first_joins (owner_key, group_set_id, consumer_id, first_joined_at)
            VALUES (p_owner, p_set, p_consumer, p_now);
    END IF;
    INSERT INTO memberships (owner_key, group_set_id, consumer_id, sub_group_id, request_id, newcomer_reply,
                             messages_hidden, joined_at, last_active_at, notified_at)
        VALUES (p_owner, p_set, p_consumer, sub_group_id, nullif(p_request, ''), newcomer_reply, p_hidden, p_now,
                NULL, NULL);
    IF p_request <> '' THEN
        INSERT INTO join_requests (owner_key, group_set_id, consumer_id, request_id, sub_group_id, sub_group_name,
                                   newcomer_reply, joined_at)
            VALUES (p_owner, p_set, p_consumer, p_request, sub_group_id, sub_group_name, newcomer_reply, p_now);
    END IF;
    status := 'joined';
END;
$$;
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # PostgreSQL's constraint names are the schema's: the new tables' keys wait under another name.
    n = NEXT if postgres else ""
    if postgres:  # the function's row types name the old tables
        op.execute("DROP FUNCTION IF EXISTS qun_join")
    for name, (columns, uniques, _, select) in TABLES.items():
        inline = [] if postgres else [sa.UniqueConstraint(*keys, name=unique) for unique, keys in uniques]
        op.create_table(name + NEXT, *columns(n), *inline)
        op.execute(f"INSERT INTO {name}{NEXT} {select}")
    for name in OLD_TABLES:
        op.drop_table(name)
    for name, (columns, uniques, indexes, _) in TABLES.items():
        op.rename_table(name + NEXT, name)
        if postgres:
            for constraint in columns(n):
                if isinstance(constraint, sa.Constraint):
                    final = str(constraint.name).removesuffix(NEXT)
                    op.execute(f"ALTER TABLE {name} RENAME CONSTRAINT {constraint.name} TO {final}")
            for unique, keys in uniques:
                op.create_unique_constraint(unique, name, keys)
        for index, keys in indexes:
            op.create_index(index, name, keys)
    if postgres:
        op.execute(JOIN_FUNCTION)
    replace_primary_key("job_settlements", "pk_job_settlements", ["store_id", "job", "period"])
    op.create_index("ix_job_settlements_period", "job_settlements", ["job", "period", "store_id"])


def downgrade() -> None:
    raise NotImplementedError(
        "0006 re-keys groups by owner; going back would merge owners' keys. Restore the backup taken before it."
    )
