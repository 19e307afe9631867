"""Compact a thread's checkpoints down to what its latest state needs, without losing any message.

The supervisor graph stores ``messages`` in a LangGraph ``DeltaChannel``. Most checkpoints contain
no copy of the list, only the messages their steps added (as pending writes). The list is rebuilt
from the nearest checkpoint that contains a full copy (a snapshot) by replaying the writes after it.
``AsyncPostgresSaver.aprune(strategy="keep_latest")`` would break that replay, so
langgraph-checkpoint-postgres 3.2 raises ``NotImplementedError`` for such threads.

``compact_threads`` keeps, in the root namespace, the newest checkpoint that holds a full copy of
``messages`` (the seed) and every checkpoint after it, with their writes, so replaying from the
seed still gives the whole list. A thread saved before the change to a delta channel holds a full
copy in every checkpoint, so only its latest checkpoint is kept, as ``keep_latest`` does.
Subgraph namespaces are kept only for the run the latest checkpoint stopped in (a pending
approval); other namespaces belong to finished calls and are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from shared.database import Pool

logger = logging.getLogger(__name__)

MESSAGES_CHANNEL: Final = "messages"

# The seed is the newest root checkpoint with a blob for the channel's version at that checkpoint:
# a snapshot, or a full value saved before the channel became a delta channel. Checkpoint IDs are
# UUIDv6 strings, so their text order is their time order.
SELECT_HEAD_AND_SEED = """
SELECT (SELECT checkpoint_id FROM checkpoints
         WHERE thread_id = %(thread_id)s AND checkpoint_ns = ''
         ORDER BY checkpoint_id DESC LIMIT 1) AS head,
       (SELECT c.checkpoint_id FROM checkpoints c
         WHERE c.thread_id = %(thread_id)s AND c.checkpoint_ns = ''
           AND EXISTS (SELECT 1 FROM checkpoint_blobs b
                        WHERE b.thread_id = c.thread_id AND b.checkpoint_ns = ''
                          AND b.channel = %(channel)s
                          AND b.version = c.checkpoint -> 'channel_versions' ->> %(channel)s)
         ORDER BY c.checkpoint_id DESC LIMIT 1) AS seed
"""
DELETE_WRITES_BEFORE_SEED = """
DELETE FROM checkpoint_writes
 WHERE thread_id = %(thread_id)s AND checkpoint_ns = '' AND checkpoint_id < %(seed)s
"""
DELETE_CHECKPOINTS_BEFORE_SEED = """
DELETE FROM checkpoints
 WHERE thread_id = %(thread_id)s AND checkpoint_ns = '' AND checkpoint_id < %(seed)s
"""
DETACH_SEED = """
UPDATE checkpoints SET parent_checkpoint_id = NULL
 WHERE thread_id = %(thread_id)s AND checkpoint_ns = '' AND checkpoint_id = %(seed)s
"""
# A subgraph checkpoint's metadata names the root checkpoint its run started from.
SELECT_FINISHED_SUBGRAPH_NAMESPACES = """
SELECT DISTINCT checkpoint_ns FROM checkpoints
 WHERE thread_id = %(thread_id)s AND checkpoint_ns <> ''
EXCEPT
SELECT DISTINCT checkpoint_ns FROM checkpoints
 WHERE thread_id = %(thread_id)s AND checkpoint_ns <> '' AND metadata -> 'parents' ->> '' = %(head)s
"""
DELETE_NAMESPACES = (
    "DELETE FROM checkpoints WHERE thread_id = %(thread_id)s AND checkpoint_ns = ANY(%(namespaces)s)",
    "DELETE FROM checkpoint_writes WHERE thread_id = %(thread_id)s AND checkpoint_ns = ANY(%(namespaces)s)",
    "DELETE FROM checkpoint_blobs WHERE thread_id = %(thread_id)s AND checkpoint_ns = ANY(%(namespaces)s)",
)
DELETE_UNREFERENCED_ROOT_BLOBS = """
DELETE FROM checkpoint_blobs b
 WHERE b.thread_id = %(thread_id)s AND b.checkpoint_ns = ''
   AND NOT EXISTS (SELECT 1 FROM checkpoints c
                    WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = ''
                      AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)
"""


async def compact_threads(pool: Pool, thread_ids: Sequence[str]) -> None:
    """Compact each thread in its own transaction; see the module docstring for what is kept.

    The caller must hold the threads (a lease in ``threads``), so that no turn saves meanwhile.
    Compacting a thread twice in a row changes nothing the second time.
    """
    for thread_id in thread_ids:
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(SELECT_HEAD_AND_SEED, {"thread_id": thread_id, "channel": MESSAGES_CHANNEL})
            row = await cur.fetchone()
            if row is None or row["head"] is None:
                continue
            params = {"thread_id": thread_id, "head": row["head"], "seed": row["seed"]}

            if row["seed"] is not None:
                await conn.execute(DELETE_WRITES_BEFORE_SEED, params)
                await conn.execute(DELETE_CHECKPOINTS_BEFORE_SEED, params)
                await conn.execute(DETACH_SEED, params)

            cur = await conn.execute(SELECT_FINISHED_SUBGRAPH_NAMESPACES, params)
            namespaces = [r["checkpoint_ns"] for r in await cur.fetchall()]
            if namespaces:
                for statement in DELETE_NAMESPACES:
                    await conn.execute(statement, {**params, "namespaces": namespaces})

            await conn.execute(DELETE_UNREFERENCED_ROOT_BLOBS, params)
        logger.debug("compacted thread %r from seed %r to head %r", thread_id, row["seed"], row["head"])
