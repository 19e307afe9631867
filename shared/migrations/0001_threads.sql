-- One row per conversation thread: who owns it and whether a run holds it.
-- The checkpointer's own tables (checkpoints, checkpoint_blobs, checkpoint_writes) hold the state;
-- this table is the app's index over them, so ownership checks, listing and retention never scan them.
CREATE TABLE threads (
    thread_id text PRIMARY KEY,
    owner_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- A run holds the thread until lease_until; a worker that died releases it when the lease expires.
    run_id uuid,
    lease_until timestamptz
);

CREATE INDEX threads_owner_updated_idx ON threads (owner_key, updated_at DESC, thread_id DESC);
CREATE INDEX threads_updated_idx ON threads (updated_at);
