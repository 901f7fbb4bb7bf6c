"""Who is calling, and for which tenant: the one thing every service call takes first.

Transports build a `CallContext` from their metadata (gRPC) or headers (REST); authentication
(a later layer) decides the `Principal`. The core never trusts a tenant the context did not
carry, and every store lookup is scoped by `ctx.tenant`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hsmbridge.errors import InvalidInput, Reason

ANONYMOUS_DEV_PRINCIPAL = "dev"
_MAX_TENANT = 128
#: Tenants under this prefix belong to hsmbridge itself (sealing keys, …): no transport can name
#: one, because only a context whose principal *is* `SYSTEM_PRINCIPAL` may carry it.
RESERVED_TENANT_PREFIX = "hsmbridge:"


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    roles: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class CallContext:
    principal: Principal
    tenant: str
    correlation_id: str | None = None
    #: told which key (and version) the call used, so the transport's audit event can name them
    #: without the core knowing anything about auditing
    observer: Callable[[str, str | None], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.tenant or len(self.tenant) > _MAX_TENANT or not self.tenant.isprintable():
            raise InvalidInput(
                "a tenant (instance id) of 1–128 printable characters is required",
                reason=Reason.INVALID_FIELD,
                target="bluemix-instance",
            )
        if self.tenant.startswith(RESERVED_TENANT_PREFIX) and self.principal is not SYSTEM_PRINCIPAL:
            raise InvalidInput(
                f"instance ids starting with {RESERVED_TENANT_PREFIX!r} are reserved",
                reason=Reason.INVALID_FIELD,
                target="bluemix-instance",
            )

    @property
    def actor(self) -> str:
        return self.principal.id

    def used(self, key_id: str, version_id: str | None = None) -> None:
        if self.observer is not None:
            self.observer(key_id, version_id)


#: hsmbridge acting on its own behalf (sealing keys, scheduled work). Compared by identity: a
#: principal an authenticator builds with the same id is a different object and gets no privilege.
SYSTEM_PRINCIPAL = Principal("hsmbridge:system")
SYSTEM_TENANT = RESERVED_TENANT_PREFIX + "system"
