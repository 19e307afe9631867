-- What a turn needs to know about its thread before it runs, kept on the row that the turn claims
-- anyway, so a turn does not read the whole checkpoint first: whether the thread waits for an
-- answer to an interrupt, and how many messages it holds (the reply lists the messages past them).
-- message_count is NULL when unknown (threads saved before this migration); the turn then reads
-- the checkpoint, as before.
ALTER TABLE threads
    ADD COLUMN pending_interrupt boolean NOT NULL DEFAULT false,
    ADD COLUMN message_count integer;
