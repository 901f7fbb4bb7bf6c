"""Sealing small secrets under an HSM-held key: connection credentials, bound import tokens.

Why not a new HSM primitive: the envelope service already does exactly this for tenants (AES-256-GCM
under a root key that only ever exists inside the HSM, versioned, bound to its context by AAD), so a
sealed secret is an envelope under a *system* root key, one per purpose, in a tenant no API caller
can name (`principal.SYSTEM_TENANT`). The key is created on first use; two processes that race to
create it both end up using the one the store kept (alias uniqueness decides).

What binds a sealed blob: the purpose (a blob sealed for one purpose never opens for another) and a
caller-chosen `context` (e.g. a connection id, a key id and project), both in the GCM AAD. Only a
SHA-256 of the context enters the AAD, so a context may be any length. Opening anything that was not
sealed here, for this purpose and context, is one `IntegrityError`.
"""

from __future__ import annotations

import hashlib
import re
import threading

from hsmbridge.core.backend import wipe
from hsmbridge.core.envelopes import EnvelopeService
from hsmbridge.core.keys import KeyService, KeySpec
from hsmbridge.core.principal import SYSTEM_PRINCIPAL, SYSTEM_TENANT, CallContext
from hsmbridge.errors import Conflict, IntegrityError, InvalidInput, NotFound, Reason

#: Prepended to every plaintext: an empty secret then still seals (the envelope service treats an
#: empty plaintext as "generate a data key"), and the format can change later.
_FORMAT = b"\x01"
#: The envelope's own limit, less the format byte.
MAX_SECRET_BYTES = 7_499
_PURPOSE = re.compile(r"^[a-z][a-z0-9-]{1,60}$")


def _aad(purpose: str, context: bytes) -> list[str]:
    return ["hsmbridge-sealed", purpose, hashlib.sha256(context).hexdigest()]


class Sealer:
    """Seals and opens secrets of up to `MAX_SECRET_BYTES` under per-purpose system root keys."""

    def __init__(self, keys: KeyService, envelopes: EnvelopeService) -> None:
        self._keys = keys
        self._envelopes = envelopes
        self._ctx = CallContext(SYSTEM_PRINCIPAL, SYSTEM_TENANT)
        self._key_ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def seal(self, purpose: str, plaintext: bytes | bytearray, context: bytes = b"") -> bytes:
        if len(plaintext) > MAX_SECRET_BYTES:
            raise InvalidInput(
                f"a sealed secret may be at most {MAX_SECRET_BYTES} bytes", reason=Reason.INVALID_FIELD
            )
        framed = bytearray(_FORMAT)
        framed += plaintext
        try:
            result = self._envelopes.wrap(self._ctx, self._key_id(purpose), framed, _aad(purpose, context))
            return result.ciphertext
        finally:
            wipe(framed)

    def open(self, purpose: str, sealed: bytes, context: bytes = b"") -> bytearray:
        """The secret, as a bytearray the caller wipes; `IntegrityError` if it was not sealed here
        for this purpose and context."""
        plaintext = self._envelopes.unwrap(
            self._ctx, self._key_id(purpose), sealed, _aad(purpose, context)
        ).plaintext
        if plaintext[:1] != _FORMAT:
            wipe(plaintext)
            raise IntegrityError("sealed data is not valid")
        secret = plaintext[1:]
        wipe(plaintext)
        return secret

    def _key_id(self, purpose: str) -> str:
        key_id = self._key_ids.get(purpose)
        if key_id is not None:
            return key_id
        if not _PURPOSE.match(purpose):
            raise ValueError(f"sealing purpose {purpose!r} must match {_PURPOSE.pattern}")
        alias = f"sealing-{purpose}"
        with self._lock:
            try:
                key = self._keys.get(self._ctx, alias)
            except NotFound:
                try:
                    key = self._keys.create(self._ctx, KeySpec(name=alias, aliases=[alias]))
                except Conflict:  # another process created it between our read and our insert
                    key = self._keys.get(self._ctx, alias)
            self._key_ids[purpose] = key.id
            return key.id
