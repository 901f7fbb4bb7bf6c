"""Configuration: a TOML file, overridden by `HSMBRIDGE_<SECTION>__<KEY>` environment variables.

With no file at all the embedded defaults describe a development box: a SoftHSM2 token under
./var/softhsm, SQLite under ./var, gRPC and REST on loopback. Production configs set
`server.dev = false` and a real module (deploy/hsmbridge.production.toml).

The HSM PIN is never taken from the command line (it would show in `ps`): it comes from
`hsm.pin_file`, the `HSMBRIDGE_HSM_PIN` variable, or — discouraged — `hsm.pin` in the file.

Development credentials for the REST facade (`dev_credentials`) come from the environment only:
`HSMBRIDGE_DEV_TOKEN` fixes the bearer token (random each start otherwise), `HSMBRIDGE_DEV_INSTANCE`
the instance id `hsmbridge dev` suggests, and `HSMBRIDGE_DEV_EXTRA_TOKENS="tok=principal,..."` adds
principals, so dual authorisation can be exercised with two of them.
"""

from __future__ import annotations

import os
import secrets
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from hsmbridge.errors import InvalidInput
from hsmbridge.huawei.auth import HuaweiConfig
from hsmbridge.security.config import SecurityConfig
from hsmbridge.security.tls import TlsConfig

ENV_PREFIX = "HSMBRIDGE_"
PIN_ENV = "HSMBRIDGE_HSM_PIN"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HsmConfig(_Section):
    #: path of the PKCS#11 module; empty: SoftHSM2's, found in the usual places
    module: str = ""
    #: the module's initialisation string (`CK_C_INITIALIZE_ARGS.pReserved`), for modules that
    #: need one: NSS softoken takes `configdir='sql:/path' certPrefix='' keyPrefix='' secmod=''`
    init_args: str | None = None
    token_label: str | None = "hsmbridge"
    slot: int | None = None
    pin: SecretStr | None = None
    pin_file: str | None = "var/softhsm/pin"
    kek_label: str = "hsmbridge-master-kek"
    pool_size: int = Field(8, ge=1, le=1024)
    checkout_timeout: float = Field(5.0, gt=0)
    cache_size: int = Field(1024, ge=1)
    #: OAEP-SHA256 import through raw RSA + software OAEP decoding (SoftHSM2 2.6.1 lacks it)
    oaep_sha256_fallback: bool = True
    #: pushing keys to cloud KMSs: wrap with RSA-OAEP-SHA256 (and AWS's RSA_AES_KEY_WRAP) in
    #: software where the token cannot (SoftHSM2 2.6.1); the material is briefly in memory
    export_software_fallback: bool = True
    #: development: the SoftHSM2 directory whose softhsm2.conf to use (sets SOFTHSM2_CONF)
    softhsm_dir: str | None = "var/softhsm"
    #: pre-generated RSA keypairs (of `import_key_pool_bits`) per worker, so creating an import
    #: token does not wait ≈1 s for RSA-4096 keygen; 0 turns the pool off (deterministic tests)
    import_key_pool_size: int = Field(2, ge=0, le=64)
    import_key_pool_bits: int = 4096
    #: HSM outage recovery (hsm/recovery.py): re-initialisation is retried with exponential
    #: backoff capped at this many seconds, for as long as the outage lasts; the cap bounds the
    #: time to serve again after the HSM returns (and is the `Retry-After` clients get)
    recovery_max_backoff: float = Field(1.0, gt=0, le=60)
    #: liveness fails when recovery has completed no attempt for this many seconds (a call stuck
    #: inside the PKCS#11 module): only then is a restart the cure
    recovery_wedged_after: float = Field(30.0, gt=0)
    #: an HSM group: several tokens holding the same master KEK, with failover between them
    #: (hsm/group.py); empty: the one token named by token_label/slot above
    tokens: list[HsmTokenConfig] = Field(default_factory=list)
    #: seconds between health checks of a group's serving tokens
    health_interval: float = Field(0.25, gt=0, le=60)
    #: seconds between attempts to take a failed token of a group back
    recovery_interval: float = Field(1.0, gt=0, le=600)

    @field_validator("import_key_pool_bits")
    @classmethod
    def _rsa_size(cls, bits: int) -> int:
        if bits not in (2048, 3072, 4096):
            raise ValueError("must be 2048, 3072 or 4096")
        return bits


class HsmTokenConfig(_Section):
    """One member of an HSM group (`[[hsm.tokens]]`): a token holding the same master KEK as
    the others. Unset fields take the `[hsm]` value."""

    token_label: str | None = None
    slot: int | None = None
    module: str = ""
    init_args: str | None = None
    pin_file: str | None = None

    @model_validator(mode="after")
    def _names_a_token(self) -> HsmTokenConfig:
        if self.token_label is None and self.slot is None:
            raise ValueError("a token of [[hsm.tokens]] needs token_label or slot")
        return self


class StoreConfig(_Section):
    #: a path or ``sqlite:///abs/path`` (SQLite, the embedded default) or
    #: ``postgresql://user:password@host/db`` (replicas share one PostgreSQL)
    url: str = "var/hsmbridge.db"
    #: older spelling of `url` (a SQLite path); wins when set
    path: str | None = None
    pool_min_size: int = Field(1, ge=1)
    pool_max_size: int = Field(10, ge=1)

    @property
    def location(self) -> str:
        return self.path or self.url

    @model_validator(mode="after")
    def _valid_location(self) -> StoreConfig:
        from hsmbridge.core.store import parse_store_url

        parse_store_url(self.location)  # ValueError never echoes the URL (it may hold a password)
        return self


class GrpcConfig(_Section):
    #: HOST:PORT, or unix:/path for the sidecar case (see socket_mode)
    listen: str = "127.0.0.1:50051"
    #: TLS, and mutual TLS with `client_ca_file` (client certificates map to principals through
    #: [[security.mtls.clients]])
    tls: TlsConfig | None = None
    #: a unix socket's mode: 0o600 (the daemon's user only) or 0o660 (and `socket_group`)
    socket_mode: int = 0o600
    socket_group: str | None = None
    #: a plaintext listener serving only grpc.health.v1.Health (it mirrors the main server's
    #: status): Kubernetes `grpc:` probes cannot present a client certificate to an mTLS port
    health_listen: str | None = None


class RestConfig(_Section):
    """The Key Protect API v2 facade, served by the daemon next to gRPC (port 0: a random one)."""

    enabled: bool = True
    listen: str = "127.0.0.1:8080"
    #: CRN segments of rendered resources: crn:v1:bluemix:public:kms:<region>:a/<account>:<instance>:...
    region: str = Field("local", pattern=r"^[A-Za-z0-9-]{1,64}$")
    account: str = Field("hsmbridge", pattern=r"^[A-Za-z0-9-]{1,64}$")
    #: log one line per request (uvicorn's access log)
    access_log: bool = False
    #: seconds in-flight REST requests get to finish on shutdown
    shutdown_grace: float = Field(10.0, ge=0)
    tls: TlsConfig | None = None
    #: largest request body; a larger one is answered 413 before it is read (default: the largest
    #: valid request, a 1,000-event acknowledgement, with room to spare; see rest/limits.py)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: seconds a connection gets to send a request's line and headers (from opening, or from the
    #: previous response) before it is closed
    header_timeout: float = Field(10.0, gt=0)
    #: seconds an idle keep-alive connection is kept open after a response
    idle_timeout: float = Field(5.0, gt=0)
    #: connections (and in-flight requests) per worker; over it, requests are answered 503
    max_connections: int = Field(2048, ge=1)


class ServerConfig(_Section):
    #: development mode: trusts the caller's principal metadata; loopback only
    dev: bool = True
    #: a non-development server refuses plaintext listeners off loopback unless told so here
    #: (e.g. TLS terminated by a mesh sidecar in the same pod)
    allow_plaintext_remote: bool = False
    #: seconds between readiness checks (HSM session answers, master KEK found, store answers)
    readiness_interval: float = Field(5.0, gt=0)
    sweep_interval: float = Field(60.0, gt=0)
    #: rotate keys whose rotation policy is due (core/rotation_scheduler.py)
    auto_rotation: bool = True
    #: seconds between rotation scans; under a day, so a due key rotates within Key Protect's
    #: 24-hour window
    rotation_interval: float = Field(900.0, gt=0, lt=86400)
    log_level: str = "INFO"
    #: worker processes sharing the ports (SO_REUSEPORT); 0 = one per core. SoftHSM2 scales with
    #: processes, not threads. 1 runs everything in this process, without a supervisor.
    workers: int = Field(0, ge=0, le=256)
    #: seconds in-flight gRPC calls get to finish on shutdown
    shutdown_grace: float = Field(10.0, ge=0)


class MetricsConfig(_Section):
    """Prometheus metrics on their own port. With several workers the supervisor serves this port
    and merges each worker's own (loopback, ephemeral) endpoint, adding a `worker` label."""

    enabled: bool = True
    #: HOST:PORT; port 0 picks a free one (printed as "metrics listening on ...")
    listen: str = "127.0.0.1:9464"


class Config(_Section):
    hsm: HsmConfig = HsmConfig()
    store: StoreConfig = StoreConfig()
    grpc: GrpcConfig = GrpcConfig()
    rest: RestConfig = RestConfig()
    server: ServerConfig = ServerConfig()
    metrics: MetricsConfig = MetricsConfig()
    security: SecurityConfig = SecurityConfig()
    huawei: HuaweiConfig = HuaweiConfig()

    def resolve_pin(self) -> str:
        env_pin = os.environ.get(PIN_ENV)
        if env_pin:
            return env_pin
        if self.hsm.pin is not None:
            return self.hsm.pin.get_secret_value()
        if self.hsm.pin_file:
            path = Path(self.hsm.pin_file)
            try:
                return path.read_text().strip()
            except FileNotFoundError:
                raise InvalidInput(
                    f"the HSM PIN file {path} does not exist: run `hsmbridge init` (development) or set "
                    f"hsm.pin_file / {PIN_ENV}"
                ) from None
        raise InvalidInput(f"no HSM PIN configured: set hsm.pin_file or {PIN_ENV}")

    def resolve_token_pin(self, member: HsmTokenConfig) -> str:
        """A group member's PIN: its own `pin_file`, else the `[hsm]` PIN."""
        if member.pin_file and not os.environ.get(PIN_ENV):
            path = Path(member.pin_file)
            try:
                return path.read_text().strip()
            except FileNotFoundError:
                name = member.token_label if member.token_label is not None else f"slot {member.slot}"
                raise InvalidInput(
                    f"the HSM PIN file {path} of HSM group member {name!r} does not exist"
                ) from None
        return self.resolve_pin()


DEV_TOKEN_ENV = "HSMBRIDGE_DEV_TOKEN"
DEV_INSTANCE_ENV = "HSMBRIDGE_DEV_INSTANCE"
DEV_EXTRA_TOKENS_ENV = "HSMBRIDGE_DEV_EXTRA_TOKENS"
DEV_PRINCIPAL = "IBMid-dev"


@dataclass(frozen=True)
class DevCredentials:
    """Who may call the development REST facade: one printed bearer token (principal
    `IBMid-dev`) plus optional extra `token → principal` pairs, and the instance id to suggest."""

    token: str
    instance: str
    token_generated: bool = False
    extra_tokens: Mapping[str, str] = field(default_factory=dict)

    def tokens(self) -> dict[str, str]:
        return {self.token: DEV_PRINCIPAL, **self.extra_tokens}


def dev_credentials(environ: Mapping[str, str] | None = None) -> DevCredentials:
    """Read (or invent) the development credentials; see the module docstring for the variables."""
    env = os.environ if environ is None else environ
    token = env.get(DEV_TOKEN_ENV, "").strip()
    generated = not token
    token = token or secrets.token_urlsafe(24)
    instance = env.get(DEV_INSTANCE_ENV, "").strip() or str(uuid.uuid4())
    extra: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in env.get(DEV_EXTRA_TOKENS_ENV, "").split(","))):
        extra_token, sep, principal = (piece.strip() for piece in item.partition("="))
        if not sep or not extra_token or not principal or extra_token == token or extra_token in extra:
            raise InvalidInput(
                f"{DEV_EXTRA_TOKENS_ENV} must be a comma-separated list of token=principal pairs, "
                "with distinct tokens other than the dev token"
            )
        extra[extra_token] = principal
    return DevCredentials(token, instance, generated, extra)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        overrides.setdefault(section, {})[key] = value
    return overrides


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InvalidInput(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"configuration file {path} is not valid TOML: {exc}") from None
    for section, values in _env_overrides(os.environ if environ is None else environ).items():
        data.setdefault(section, {}).update(values)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in exc.errors())
        raise InvalidInput(f"invalid configuration: {problems}") from None
