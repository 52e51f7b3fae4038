-- Pruning the change log's removals (store/postgres/removals.rs). mmc_image_removals gains
-- one row per deleted image and was never emptied; gateways prune the rows older than their
-- `--removal-retention-hours` (7 days by default).
--
-- A scan gateway whose change position is below a pruned removal has missed it for good. The
-- prune therefore raises `through` (the highest change number pruned) in the same statement,
-- and such a gateway, reading it with its changes, sweeps its codes for images that no longer
-- exist. A missed removal never makes a wrong answer (candidates are scored from the rows
-- that exist), only a wasted candidate until the sweep.

ALTER TABLE mmc_image_removals ADD COLUMN removed_at timestamptz NOT NULL DEFAULT now();

CREATE TABLE mmc_image_removals_pruned (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    through bigint NOT NULL
);
INSERT INTO mmc_image_removals_pruned (through) VALUES (0);
