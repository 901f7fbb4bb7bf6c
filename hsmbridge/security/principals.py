"""Who a caller is once authenticated: an `Identity`, and how it travels inside a `Principal`.

Why a separate model: `core.principal.Principal` carries an id and a set of role strings, which is
all the core needs (dual authorisation compares ids; ``createdBy`` shows the id). Authorisation
needs more — which instances the caller may use and whether it holds the separate KeyPurge
grant — and the transports only hand a `Principal` through `CallContext`. So `Identity` is the
rich form, and `to_principal` / `identity_of` encode it into ``Principal.roles`` and back without
changing the core type:

    roles = {"Writer", "KeyPurge", "instance:tenant-a", "instance:tenant-b"}   # or "instance:*"

Role names never contain ``:`` (they are validated against `Role`), so the ``instance:`` prefix
cannot be forged through a role claim. A `Principal` that carries no ``instance:`` entry at all
(the development authenticator's) decodes to an identity that may use *no* instance: the
encoding fails closed. If `Principal` gains an ``instances`` field, only these two functions
change.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from hsmbridge.core.principal import Principal

#: Prefix of the instance entries encoded into ``Principal.roles``.
INSTANCE_PREFIX = "instance:"
#: The encoded form of "any instance".
ANY_INSTANCE = INSTANCE_PREFIX + "*"
#: Key Protect's separate purge grant: not part of any role, not implied by Manager.
KEY_PURGE = "KeyPurge"

_MAX_ID = 256


class Role(enum.IntEnum):
    """Key Protect's service access roles. They are additive (IBM: "A Manager … has all of the
    permissions that a Reader has and more"), so an order is enough to compare them."""

    READER = 1
    READER_PLUS = 2
    WRITER = 3
    MANAGER = 4

    @property
    def iam_name(self) -> str:
        return _IAM_NAMES[self]

    @classmethod
    def parse(cls, name: str) -> Role | None:
        """The role a name denotes, or None. Accepts IBM's spellings: ``Writer``, ``writer``, and
        the CRN forms ``crn:v1:bluemix:public:iam::::serviceRole:Writer`` IAM policies use."""
        tail = name.rsplit(":", 1)[-1].strip()
        return _BY_NAME.get(tail.lower())


_IAM_NAMES = {
    Role.READER: "Reader",
    Role.READER_PLUS: "ReaderPlus",
    Role.WRITER: "Writer",
    Role.MANAGER: "Manager",
}
_BY_NAME = {n.lower(): r for r, n in _IAM_NAMES.items()}
ROLE_NAMES = frozenset(_IAM_NAMES.values())


def is_key_purge(name: str) -> bool:
    return name.rsplit(":", 1)[-1].strip().lower() == KEY_PURGE.lower()


def parse_roles(names: Iterable[str], *, strict: bool) -> tuple[frozenset[str], bool]:
    """Role names → (canonical role names, key_purge). `strict` (configuration) raises on an
    unknown name so a typo never silently grants less — or, worse, is mistaken for more; non-strict
    (token claims) ignores names that are not Key Protect roles, since IdPs put all sorts of
    groups in the same claim."""
    roles: set[str] = set()
    key_purge = False
    for name in names:
        if not isinstance(name, str):
            if strict:
                raise ValueError("roles must be strings")
            continue
        if is_key_purge(name):
            key_purge = True
            continue
        role = Role.parse(name)
        if role is None:
            if strict:
                known = ", ".join([*sorted(ROLE_NAMES), KEY_PURGE])
                raise ValueError(f"unknown role {name[:40]!r}: expected one of {known}")
            continue
        roles.add(role.iam_name)
    return frozenset(roles), key_purge


def parse_instances(value: str | Iterable[str] | None) -> frozenset[str] | None:
    """``"*"`` (or a list holding ``"*"``) → None, meaning any instance; otherwise the set."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    items = [v.strip() for v in value if isinstance(v, str) and v.strip()]
    if "*" in items:
        return None
    return frozenset(items)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller.

    `instances` None means any instance (an operator-level identity); an empty set means none.
    `roles` holds canonical role names (`ROLE_NAMES`). `key_purge` is the separate KeyPurge grant.
    `method` says how the caller authenticated (``token``, ``jwt``, ``mtls``) — for audit only,
    never for decisions.
    """

    principal_id: str
    instances: frozenset[str] | None = frozenset()
    roles: frozenset[str] = field(default_factory=frozenset)
    key_purge: bool = False
    method: str = ""

    def __post_init__(self) -> None:
        if not self.principal_id or len(self.principal_id) > _MAX_ID or not self.principal_id.isprintable():
            raise ValueError("a principal id of 1–256 printable characters is required")
        unknown = self.roles - ROLE_NAMES
        if unknown:
            raise ValueError("roles must be canonical Key Protect role names")

    @property
    def top_role(self) -> Role | None:
        """The strongest role held: roles are additive, so this alone decides role checks."""
        ranked = [r for r in (Role.parse(n) for n in self.roles) if r is not None]
        return max(ranked) if ranked else None

    def may_use(self, instance: str) -> bool:
        return self.instances is None or instance in self.instances


def to_principal(identity: Identity) -> Principal:
    """Encode for `CallContext` (see the module docstring for the format)."""
    encoded = set(identity.roles)
    if identity.key_purge:
        encoded.add(KEY_PURGE)
    if identity.instances is None:
        encoded.add(ANY_INSTANCE)
    else:
        encoded.update(INSTANCE_PREFIX + i for i in identity.instances)
    return Principal(identity.principal_id, roles=frozenset(encoded))


def identity_of(principal: Principal) -> Identity:
    """Decode what `to_principal` encoded. Unknown entries are ignored; no instance entry means
    no instance (fail closed)."""
    roles = frozenset(r for r in principal.roles if r in ROLE_NAMES)
    instances: frozenset[str] | None
    if ANY_INSTANCE in principal.roles:
        instances = None
    else:
        instances = frozenset(
            r[len(INSTANCE_PREFIX) :] for r in principal.roles if r.startswith(INSTANCE_PREFIX)
        )
    return Identity(principal.id, instances=instances, roles=roles, key_purge=KEY_PURGE in principal.roles)
