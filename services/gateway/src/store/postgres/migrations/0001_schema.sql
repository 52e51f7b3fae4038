-- The gateway's state in PostgreSQL (see services/gateway/src/store/postgres/mod.rs).
-- Applied once per database by the gateway at start (or `mmc db migrate`), under an
-- advisory lock, so any number of gateways may start at once.

CREATE EXTENSION IF NOT EXISTS vector;

-- The embedding space each kind of vector belongs to ('images'): recorded with the first
-- vectors and enforced on every later write and query, as the embedded store does.
CREATE TABLE mmc_spaces (
    store text PRIMARY KEY,
    model_id text NOT NULL,
    dimensions integer NOT NULL CHECK (dimensions > 0)
);

-- Insertion order of images: ListImages pages by it. A re-indexed image takes a new one.
CREATE SEQUENCE mmc_image_seq;

CREATE TABLE mmc_images (
    seq bigint PRIMARY KEY,
    -- Derived from the content hash: one row per distinct photo, whichever gateway
    -- indexed it (two gateways indexing the same photo at once store it once).
    image_id text NOT NULL UNIQUE,
    content_hash text NOT NULL UNIQUE,
    -- The whole ImageRecord as JSON: metadata filters are pushed into SQL on
    -- record->'metadata' (jsonb containment, GIN-indexed below).
    record jsonb NOT NULL,
    -- Copied out of the record for the review queue's index and the version check.
    needs_review boolean NOT NULL,
    caption_confidence real NOT NULL,
    version bigint NOT NULL,
    -- Unit vectors. The columns get their dimension (vector(N)) when the space is
    -- recorded: the dimension is the embed model's, unknown until then.
    image_vector vector NOT NULL,
    caption_vector vector NOT NULL,
    -- image_vector + caption_vector. A search's fused score with equal weights,
    -- 0.5·cos(q, image) + 0.5·cos(q, caption), is 0.5·(q · fused_vector): linear in this
    -- one vector, so one HNSW index on it (inner product, made with the space) ranks by
    -- the fused score itself.
    fused_vector vector NOT NULL
);

CREATE INDEX mmc_images_metadata ON mmc_images USING gin ((record -> 'metadata') jsonb_path_ops);
CREATE INDEX mmc_images_review_queue ON mmc_images (caption_confidence, seq) WHERE needs_review;

CREATE TABLE mmc_thumbnails (
    image_id text PRIMARY KEY,
    jpeg bytea NOT NULL
);

CREATE TABLE mmc_meetings (
    meeting_id text PRIMARY KEY,
    created_at_unix_ms bigint NOT NULL,
    -- The gateway's Meeting type as JSON (transcript, notes, review).
    meeting jsonb NOT NULL,
    -- The space of the segment vectors, and the vectors: little-endian f32, one per
    -- segment, in order (read whole by AskMeeting's retrieval, never searched in SQL).
    space_model_id text NOT NULL,
    space_dimensions integer NOT NULL CHECK (space_dimensions > 0),
    segment_vectors bytea NOT NULL
);

CREATE INDEX mmc_meetings_newest ON mmc_meetings (created_at_unix_ms DESC, meeting_id);
