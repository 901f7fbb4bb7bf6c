-- 001_initial: the whole domain model of hsmbridge.
--
-- Written to be reusable by a PostgreSQL backend. Conventions that make that possible:
-- * Timestamps are TEXT holding fixed-width ISO-8601 UTC with microseconds
--   ("2024-05-01T12:00:00.000000Z"), so string order is time order in both engines.
-- * Enums (key states) are INTEGER with the values of hsmbridge.core.model.KeyState.
-- * Booleans are BOOLEAN (SQLite stores 0/1; PostgreSQL a real boolean).
-- * Every row is keyed by tenant first: lookups are always tenant-scoped, and the
--   composite keys make "the same id in two tenants" legal by construction.
--
-- SQLite-only bits: PostgreSQL applies this very file through migrate.render(), which spells
-- them the PostgreSQL way (see hsmbridge/core/store/migrate.py):
-- * BLOB columns (key_versions.wrapped_blob, import_tokens.nonce/public_key_der) become BYTEA.
-- * TEXT becomes TEXT COLLATE "C", so text orders byte by byte as in SQLite.
-- Everything else is plain SQL-92-ish DDL that both engines accept.

CREATE TABLE schema_version (
    version     INTEGER NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    applied_at  TEXT    NOT NULL
);

CREATE TABLE tenants (
    id          TEXT NOT NULL PRIMARY KEY,
    created_at  TEXT NOT NULL
);

-- created_by is NULL for rings nobody created explicitly (the "default" ring, born with its
-- tenant); created_at may be NULL for rings whose creation time is unknown.
CREATE TABLE key_rings (
    tenant      TEXT NOT NULL REFERENCES tenants (id),
    id          TEXT NOT NULL,
    created_at  TEXT,
    created_by  TEXT,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE keys (
    tenant                   TEXT    NOT NULL,
    id                       TEXT    NOT NULL,
    name                     TEXT    NOT NULL,
    description              TEXT,
    extractable              BOOLEAN NOT NULL,
    imported                 BOOLEAN NOT NULL,
    state                    INTEGER NOT NULL CHECK (state IN (1, 2, 3, 5)),
    bit_length               INTEGER NOT NULL,
    key_ring                 TEXT    NOT NULL,
    created_at               TEXT    NOT NULL,
    created_by               TEXT    NOT NULL,
    updated_at               TEXT    NOT NULL,
    -- No foreign key: the key and its first version reference each other.
    current_version_id       TEXT    NOT NULL,
    expires_at               TEXT,
    last_rotated_at          TEXT,
    state_changed_at         TEXT,
    deleted_at               TEXT,
    deleted_by               TEXT,
    state_before_delete      INTEGER CHECK (state_before_delete IN (1, 2, 3, 5)),
    dual_auth_enabled        BOOLEAN NOT NULL,
    dual_auth_set_by         TEXT,
    dual_auth_expires_at     TEXT,
    -- NULL means "no rotation policy at all", distinct from a disabled policy.
    rotation_enabled         BOOLEAN,
    rotation_interval_month  INTEGER,
    -- Optimistic concurrency: bumped on every update.
    revision                 INTEGER NOT NULL,
    PRIMARY KEY (tenant, id),
    -- Implies the tenant exists (key_rings references tenants); blocks deleting a non-empty ring.
    FOREIGN KEY (tenant, key_ring) REFERENCES key_rings (tenant, id)
);

-- list_keys filters by ring or state and always sorts by id; the primary key covers the
-- unfiltered listing, these cover the filtered ones and the key_rings foreign key check.
CREATE INDEX keys_by_ring ON keys (tenant, key_ring, id);
CREATE INDEX keys_by_state ON keys (tenant, state, id);

CREATE TABLE key_versions (
    tenant          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    number          INTEGER NOT NULL,
    created_at      TEXT    NOT NULL,
    wrapped_blob    BLOB    NOT NULL,  -- SQLite-only type name: BYTEA in PostgreSQL
    wrapped_length  INTEGER NOT NULL,
    kek_label       TEXT    NOT NULL,
    wrap_mechanism  TEXT    NOT NULL,
    material_kind   TEXT    NOT NULL DEFAULT 'aes',  -- 'aes' (root) or 'secret' (standard)
    PRIMARY KEY (tenant, id),
    -- Two rotations racing for the same number: one of them must lose. Also serves
    -- list_versions (newest first) and the foreign key below.
    UNIQUE (tenant, key_id, number),
    FOREIGN KEY (tenant, key_id) REFERENCES keys (tenant, id) ON DELETE CASCADE
);

CREATE TABLE key_aliases (
    tenant      TEXT    NOT NULL,
    alias       TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    -- Creation order within the key (1, 2, ...): timestamps can tie, this cannot.
    seq         INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    -- An alias is unique within its tenant, whichever key holds it.
    PRIMARY KEY (tenant, alias),
    UNIQUE (tenant, key_id, seq),
    FOREIGN KEY (tenant, key_id) REFERENCES keys (tenant, id) ON DELETE CASCADE
);

-- At most one import token per tenant: a new one replaces the old.
CREATE TABLE import_tokens (
    tenant                TEXT    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    id                    TEXT    NOT NULL,
    created_at            TEXT    NOT NULL,
    created_by            TEXT    NOT NULL,
    expires_at            TEXT    NOT NULL,
    max_retrievals        INTEGER NOT NULL,
    remaining_retrievals  INTEGER NOT NULL,
    nonce                 BLOB    NOT NULL,  -- SQLite-only type name: BYTEA in PostgreSQL
    key_bits              INTEGER NOT NULL,
    public_key_der        BLOB    NOT NULL,  -- SQLite-only type name: BYTEA in PostgreSQL
    hsm_object_id         TEXT    NOT NULL
);

-- The sweeper lists expired tokens across all tenants.
CREATE INDEX import_tokens_by_expiry ON import_tokens (expires_at);

CREATE TABLE instance_policies (
    tenant       TEXT NOT NULL REFERENCES tenants (id),
    policy_type  TEXT NOT NULL,
    data         TEXT NOT NULL,  -- JSON document
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    updated_by   TEXT NOT NULL,
    PRIMARY KEY (tenant, policy_type)
);
