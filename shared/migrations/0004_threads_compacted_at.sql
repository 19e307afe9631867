-- When the nightly job last pruned the thread's checkpoints to the latest one. A thread needs
-- compacting again only after a turn has updated it since (compacted_at < updated_at).
ALTER TABLE threads ADD COLUMN compacted_at timestamptz;

CREATE INDEX threads_compaction_due_idx ON threads (updated_at)
    WHERE compacted_at IS NULL OR compacted_at < updated_at;
