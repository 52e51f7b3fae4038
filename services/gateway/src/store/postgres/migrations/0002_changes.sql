-- What changed in mmc_images, in commit order, for gateways that keep codes of every
-- image's vector in memory (`--search-index scan`, see store/postgres/codes.rs). Before each
-- search such a gateway reads the changes numbered above the last one it applied.
--
-- Every row write takes a number from mmc_image_change_seq: an inserted or re-indexed
-- image's row gets it in `changed`; a removed row (deleted, or re-indexed under a new seq)
-- leaves it in mmc_image_removals. The numbers are taken under one transaction-scoped
-- advisory lock, held to commit, so writes commit in the order of their numbers: a reader
-- that has seen number N has seen every change below N. (Without the lock a transaction
-- could commit number 9 after a reader had moved past 10, and that change would be missed
-- for good.) The gateway takes the lock first in its own write transactions, before any row
-- lock (a row lock taken first could deadlock with a writer holding the advisory lock); the
-- trigger takes it too, so writes made with other tools keep the order.
--
-- Rows written before this migration have no `changed`: gateways load every row at start,
-- so they are only missing from the change log, which holds later changes.

CREATE SEQUENCE mmc_image_change_seq;

-- Those gateways score their candidates from fused_vector alone: kept in the row rather
-- than out of line (pgvector's default, EXTERNAL), no TOAST lookup per candidate
-- (EXPLAIN ANALYZE at 100 000 images, 400 candidates: 7 buffer hits each instead of 11,
-- 3.2-4.1 ms instead of 5.1-6.2). Wider vectors (768 dimensions and up) still go out of
-- line, the row being over its 2 kB target; rows written before this keep their layout.
ALTER TABLE mmc_images ALTER COLUMN fused_vector SET STORAGE MAIN;

ALTER TABLE mmc_images ADD COLUMN changed bigint;
CREATE INDEX mmc_images_changed ON mmc_images (changed);

CREATE TABLE mmc_image_removals (
    change bigint PRIMARY KEY,
    seq bigint NOT NULL
);

CREATE FUNCTION mmc_image_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7243102);
    IF TG_OP = 'DELETE' THEN
        INSERT INTO mmc_image_removals (change, seq) VALUES (nextval('mmc_image_change_seq'), OLD.seq);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF OLD.seq <> NEW.seq THEN
            INSERT INTO mmc_image_removals (change, seq) VALUES (nextval('mmc_image_change_seq'), OLD.seq);
        END IF;
    END IF;
    NEW.changed := nextval('mmc_image_change_seq');
    RETURN NEW;
END
$$;

CREATE TRIGGER mmc_images_changed BEFORE INSERT OR UPDATE OR DELETE ON mmc_images
    FOR EACH ROW EXECUTE FUNCTION mmc_image_changed();
