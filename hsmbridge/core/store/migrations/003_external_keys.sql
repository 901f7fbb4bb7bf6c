-- 003_external_keys: keys whose material the owner brings, and bound import parameters.
--
-- Same conventions as 001 (tenant-first keys, fixed-width UTC text timestamps, BOOLEAN, BLOB that
-- PostgreSQL renders as BYTEA), so both engines load this file unchanged.
--
-- external_keys: a key created "empty" (pending import) whose material is imported later, may
-- expire, may be deleted and then reimported — the same material only — plus deletion scheduled
-- days ahead. The core `keys` row carries the id, the enabled/disabled state and the versions;
-- this row what the core has no column for. A key of a Huawei project has one even when its
-- material was generated (origin 'kms'), because alias, description and scheduled deletion live
-- here.
--   material_version_id  the version id the material is stored as; kept after the material is
--                        deleted so a reimport restores the same id (old ciphertexts name it)
--   material_check       a GCM seal of a constant under the last imported material: a reimport is
--                        accepted only if it opens it (checked in the HSM; never reveals the key)
CREATE TABLE external_keys (
    tenant                 TEXT    NOT NULL,
    key_id                 TEXT    NOT NULL,
    alias                  TEXT    NOT NULL,
    description            TEXT    NOT NULL,
    origin                 TEXT    NOT NULL CHECK (origin IN ('kms', 'external')),
    material_present       BOOLEAN NOT NULL,
    material_version_id    TEXT,
    material_check         BLOB,
    material_expires_at    TEXT,
    scheduled_deletion_at  TEXT,
    created_at             TEXT    NOT NULL,
    PRIMARY KEY (tenant, key_id),
    FOREIGN KEY (tenant, key_id) REFERENCES keys (tenant, id) ON DELETE CASCADE
);

CREATE UNIQUE INDEX external_keys_by_alias ON external_keys (tenant, alias);
CREATE INDEX external_keys_by_expiry ON external_keys (material_expires_at);
CREATE INDEX external_keys_by_deletion ON external_keys (scheduled_deletion_at);

-- import_parameters: one row per bound import token handed out. The token itself is sealed under
-- an HSM-held key and carries everything it binds; this row exists so that a token is used at most
-- once (`used`) and so that the sweeper destroys the RSA keypair in the HSM once it expired.
CREATE TABLE import_parameters (
    tenant         TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    key_id         TEXT    NOT NULL,
    hsm_object_id  TEXT    NOT NULL,
    expires_at     TEXT    NOT NULL,
    used           BOOLEAN NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE INDEX import_parameters_by_expiry ON import_parameters (expires_at);
