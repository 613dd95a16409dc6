-- Run once by the postgres image on an empty data volume: the queue gets a database of its own
-- (POSTGRES_DB is mailbox-store's). Owned by the same role; no other schema objects are made here:
-- each service creates and migrates its own tables at startup.
CREATE DATABASE mailflow_queue;
