"""PostgreSQL: a join in one round trip, the server-side function ``qun_join`` (SQLite: nothing).

The function takes the store's (or streamer's) capacity row and the set's row
under their locks, checks what a plain join needs, places the consumer (T5)
and writes it all, in one statement: the store's lock, which every join of the
store waits for, is held for the function's own microseconds instead of four
round trips. Anything but a plain join (a replayed request id, a member asking
again, a changed threshold, a cap reached, a dissolved set) answers
``fallback``, and the service runs its statement-by-statement path, which owns
those answers and their refusals; so the function only ever joins when that
path would, and the caps (T1, T2, T4) and the placement (T5) come in as
parameters from the rules file.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOIN_FUNCTION = """
CREATE OR REPLACE FUNCTION qun_join(
    p_set text, p_consumer text, p_version bigint, p_request text, p_hidden boolean, p_now timestamptz,
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
    SELECT * INTO o FROM capacity_owners
        WHERE owner_key = (SELECT owner_key FROM group_sets WHERE id = p_set) FOR UPDATE;
    IF NOT FOUND THEN RETURN; END IF;
    SELECT * INTO s FROM group_sets WHERE id = p_set FOR UPDATE;
    IF NOT FOUND OR s.dissolved_at IS NOT NULL OR s.threshold_version <> p_version THEN RETURN; END IF;
    kind := s.kind;
    IF p_request <> '' AND EXISTS (SELECT 1 FROM join_requests
            WHERE group_set_id = p_set AND consumer_id = p_consumer AND request_id = p_request) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM memberships WHERE group_set_id = p_set AND consumer_id = p_consumer) THEN
        RETURN;
    END IF;
    IF s.kind = 'store' THEN
        sub_cap := p_store_sub_cap; set_cap := p_store_set_cap; max_subs := p_store_max_subs;
        SELECT level INTO lvl FROM group_levels
            WHERE store_id = s.store_id AND month <= p_month ORDER BY month DESC LIMIT 1;
        base := p_store_members[coalesce(lvl, 0) + 1];
        member_cap := CASE WHEN o.extra_members <= 0 THEN base
                           ELSE least(base + o.extra_members, greatest(base, p_max_members)) END;
    ELSE
        sub_cap := p_live_sub_cap; set_cap := p_live_set_cap; max_subs := p_live_max_subs;
        member_cap := p_live_members;
    END IF;
    IF s.member_count >= set_cap OR o.member_count >= member_cap THEN RETURN; END IF;
    SELECT * INTO found_sub FROM sub_groups
        WHERE group_set_id = p_set AND member_count < sub_cap ORDER BY seq LIMIT 1;
    IF FOUND THEN
        UPDATE sub_groups SET member_count = member_count + 1 WHERE id = found_sub.id;
        sub_group_id := found_sub.id; sub_group_name := found_sub.name; new_sub_group := false;
    ELSE
        SELECT count(*), coalesce(max(seq), 0) INTO subs, last_seq FROM sub_groups WHERE group_set_id = p_set;
        IF subs >= max_subs THEN RETURN; END IF;
        sub_group_id := p_new_sub_id; sub_group_name := s.name || (last_seq + 1)::text; new_sub_group := true;
        INSERT INTO sub_groups (id, group_set_id, seq, name, member_count, created_at)
            VALUES (p_new_sub_id, p_set, last_seq + 1, sub_group_name, 1, p_now);
    END IF;
    UPDATE group_sets SET member_count = member_count + 1,
                          sub_group_count = sub_group_count + CASE WHEN new_sub_group THEN 1 ELSE 0 END
        WHERE id = p_set;
    UPDATE capacity_owners SET member_count = member_count + 1 WHERE owner_key = o.owner_key;
    joined_before := EXISTS (SELECT 1 FROM first_joins WHERE group_set_id = p_set AND consumer_id = p_consumer);
    IF joined_before THEN
        newcomer_reply := '';
    ELSE
        newcomer_reply := s.newcomer_reply;
        INSERT INTO first_joins (group_set_id, consumer_id, first_joined_at) VALUES (p_set, p_consumer, p_now);
    END IF;
    INSERT INTO memberships (group_set_id, consumer_id, sub_group_id, request_id, newcomer_reply,
                             messages_hidden, joined_at, last_active_at, notified_at)
        VALUES (p_set, p_consumer, sub_group_id, nullif(p_request, ''), newcomer_reply, p_hidden, p_now,
                NULL, NULL);
    IF p_request <> '' THEN
        INSERT INTO join_requests (group_set_id, consumer_id, request_id, sub_group_id, sub_group_name,
                                   newcomer_reply, joined_at)
            VALUES (p_set, p_consumer, p_request, sub_group_id, sub_group_name, newcomer_reply, p_now);
    END IF;
    status := 'joined';
END;
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(JOIN_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS qun_join")
