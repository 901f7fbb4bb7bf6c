-- 002_policies_and_registrations: what key policies and registrations need beyond 001.
--
-- Same conventions as 001 (tenant-first keys, fixed-width UTC text timestamps, BOOLEAN, INTEGER
-- enums), so a PostgreSQL backend can load this file unchanged.
--
-- Both tables hang off a key with ON DELETE CASCADE: a purged key takes its policy metadata and
-- its registrations with it (purge_key also deletes them explicitly, for connections without
-- PRAGMA foreign_keys).

-- Key policies (E22/E23). The policy *values* live on the key itself (keys.dual_auth_enabled,
-- keys.rotation_*), because the lifecycle code reads them there; this table only keeps what the
-- policy representation adds: a stable policy id and who set it when. A key whose policy came
-- from an instance policy or a create-time override has no row until the first PUT.
CREATE TABLE key_policies (
    tenant       TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    policy_type  TEXT NOT NULL CHECK (policy_type IN ('rotation', 'dualAuthDelete')),
    id           TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    updated_by   TEXT NOT NULL,
    PRIMARY KEY (tenant, key_id, policy_type),
    FOREIGN KEY (tenant, key_id) REFERENCES keys (tenant, id) ON DELETE CASCADE
);

-- Registrations (E29-E35): a cloud resource (by CRN) protected by a key. Keyed by
-- (tenant, key, CRN): the same resource may be registered with two keys, never twice with one.
-- state: 1 active (listed, blocks deletion), 2 suspended (the key was force-deleted: hidden,
-- no longer blocking), 3 deactivated (E33 moved it on from suspended).
CREATE TABLE registrations (
    tenant                  TEXT    NOT NULL,
    key_id                  TEXT    NOT NULL,
    resource_crn            TEXT    NOT NULL,
    description             TEXT,
    prevent_key_deletion    BOOLEAN NOT NULL,
    registration_metadata   TEXT,
    -- The key version the resource is protected by, and its creation date (denormalised: every
    -- registration listed shows it, and key versions never change).
    key_version_id          TEXT    NOT NULL,
    key_version_created_at  TEXT    NOT NULL,
    state                   INTEGER NOT NULL CHECK (state IN (1, 2, 3)),
    created_at              TEXT    NOT NULL,
    created_by              TEXT    NOT NULL,
    updated_at              TEXT    NOT NULL,
    updated_by              TEXT    NOT NULL,
    PRIMARY KEY (tenant, key_id, resource_crn),
    FOREIGN KEY (tenant, key_id) REFERENCES keys (tenant, id) ON DELETE CASCADE
);

-- E35 lists a tenant's registrations for any key by CRN prefix.
CREATE INDEX registrations_by_crn ON registrations (tenant, resource_crn);
