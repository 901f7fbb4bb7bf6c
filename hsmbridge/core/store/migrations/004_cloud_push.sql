-- 004_cloud_push: pushing HSM keys into cloud KMSs (hsmbridge/push/, Thales CCKM style).
--
-- Same conventions as 001 (tenant-first keys, fixed-width UTC text timestamps, BOOLEAN).
--
-- push_connections: a target account. `settings` is JSON of the non-secret fields (URL, region,
-- instance or project id, access key id); `sealed_secret` is the secret part (token, secret key,
-- SK) sealed under an HSM-held key (core/sealing.py), bound to the tenant and connection id. It
-- is never returned by any API.
CREATE TABLE push_connections (
    tenant         TEXT NOT NULL,
    id             TEXT NOT NULL,
    name           TEXT NOT NULL,
    cloud          TEXT NOT NULL CHECK (cloud IN ('ibm', 'aws', 'huawei')),
    settings       TEXT NOT NULL,
    sealed_secret  BLOB NOT NULL,
    created_at     TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, name)
);

-- push_cloud_keys: a key in a target KMS that hsmbridge feeds. The material columns (local_key_id,
-- local_version_id, kcv, pushed_at) are written only after the cloud accepted an import, so no row
-- ever claims material the cloud does not hold; `kcv` is what the same-material rule compares.
-- `cloud_params` is JSON of the target's own view (AWS DescribeKey, Key Protect metadata, Huawei
-- describe-key) as of `synced_at`.
CREATE TABLE push_cloud_keys (
    tenant            TEXT    NOT NULL,
    id                TEXT    NOT NULL,
    cloud             TEXT    NOT NULL CHECK (cloud IN ('ibm', 'aws', 'huawei')),
    connection_id     TEXT    NOT NULL,
    kms_id            TEXT    NOT NULL,
    region            TEXT,
    local_key_id      TEXT,
    local_key_name    TEXT,
    local_version_id  TEXT,
    kcv               TEXT,
    key_expiration    BOOLEAN NOT NULL,
    valid_to          TEXT,
    cloud_params      TEXT    NOT NULL,
    synced_at         TEXT    NOT NULL,
    pushed_at         TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, connection_id, kms_id),
    FOREIGN KEY (tenant, connection_id) REFERENCES push_connections (tenant, id)
);
