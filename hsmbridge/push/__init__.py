"""Pushing HSM-held keys into cloud KMSs, as Thales CCKM's import-material does.

hsmbridge is the source of truth: a root key version is wrapped for the cloud's import key inside
the HSM and imported there (origin EXTERNAL / imported), and only the same material may ever be
imported again into the same cloud key. Layout, dependencies pointing down:

- `connections`, `service`, `expiry`: the domain (target accounts with sealed secrets, cloud-key
  records, the same-material rule, expiry mapping); no transport, no SDK.
- `clouds/`: one client per cloud (`ibm` over HTTP, `aws` with boto3, `huawei` with
  huaweicloudsdkkms) behind `clouds.base.CloudClient`, plus the shared retry policy.
- `rest`, `grpc`, `cli`: thin adapters (REST `/api/v1/...`, gRPC `PushService`, CLI subcommands).
"""
