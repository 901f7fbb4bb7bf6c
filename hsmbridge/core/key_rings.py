"""Key rings (E39–E41): create, list, delete — transport-free.

Rules, and why they live here rather than in the store:
- ``default`` exists in every instance and can be neither created nor deleted: keys created
  without ``x-kms-key-ring`` land there, and a forced ring delete moves keys back into it.
- An instance holds at most `MAX_KEY_RINGS` rings, ``default`` included (Key Protect: "The
  maximum amount of key rings is 50 per service instance", and ``default`` is listed as one).
  The count is taken inside the write transaction, so two concurrent creates cannot both take
  the last slot.
- Delete without ``force`` needs an empty ring: any key, even a deleted one, blocks it
  (``KEY_RING_NOT_EMPTY_ERR``). With ``force`` every key must be deleted (state 5), else
  ``KEY_RING_KEYS_NOT_DELETED_ERR``; those deleted keys are moved to ``default`` in the same
  transaction as the ring's removal, so a restore later finds the key in a ring that exists.
- A ring ID is 2–100 characters of ``[A-Za-z0-9-]`` (E40). ``default`` is reserved in any case
  spelling, so ``Default`` can never sit next to it and confuse a reader of the list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from hsmbridge.core.clock import Clock
from hsmbridge.core.model import DEFAULT_KEY_RING, KeyState
from hsmbridge.core.principal import CallContext
from hsmbridge.core.store.base import KeyQuery, KeyRing, Store, StoreTransaction
from hsmbridge.errors import AlreadyExists, Conflict, InvalidInput, NotFound, Reason

MAX_KEY_RINGS = 50
_RING_ID = re.compile(r"[A-Za-z0-9-]{2,100}", re.ASCII)
RING_ID_EXPECTATION = "a string of 2 to 100 characters matching pattern ^[a-zA-Z0-9-]*$"


def validate_ring_id(ring_id: str) -> str:
    """The E40/E41 path parameter; the target is ``id`` as in Key Protect's own message."""
    if not isinstance(ring_id, str) or not _RING_ID.fullmatch(ring_id):
        raise InvalidInput(
            f"The path_param 'id' must be: {RING_ID_EXPECTATION}",
            reason=Reason.INVALID_FIELD,
            target="id",
        )
    return ring_id


def refuse_default(ring_id: str, verb: str) -> None:
    if ring_id.casefold() == DEFAULT_KEY_RING:
        raise InvalidInput(
            f"The path_param 'id' must be: not 'default': the default key ring cannot be {verb}",
            reason=Reason.INVALID_FIELD,
            target="id",
        )


@dataclass(frozen=True, slots=True)
class KeyRingPage:
    rings: list[KeyRing]
    total: int


class KeyRingService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def list(self, ctx: CallContext, *, limit: int, offset: int = 0) -> KeyRingPage:
        """``default`` first, then by ID. An instance nobody has written to yet still has its
        ``default`` ring: the store creates it lazily with the tenant, the API promises it always."""
        rings = self._store.list_key_rings(ctx.tenant)
        if not any(ring.id == DEFAULT_KEY_RING for ring in rings):
            rings.append(KeyRing(DEFAULT_KEY_RING, ctx.tenant, None, None))
        rings.sort(key=lambda ring: (ring.id != DEFAULT_KEY_RING, ring.id))
        return KeyRingPage(rings[offset : offset + limit], len(rings))

    def create(self, ctx: CallContext, ring_id: str) -> bool:
        """True if created, False if the ring already existed (E40 answers 204 then)."""
        validate_ring_id(ring_id)
        refuse_default(ring_id, "created")
        now = self._clock.now()
        with self._store.transaction() as tx:
            tx.ensure_tenant(ctx.tenant, now)
            rings = tx.list_key_rings(ctx.tenant)
            if any(ring.id == ring_id for ring in rings):
                return False
            if len(rings) >= MAX_KEY_RINGS:
                raise Conflict(
                    f"The key ring quota has been reached: an instance can have up to {MAX_KEY_RINGS} "
                    "key rings, including the default key ring.",
                    reason=Reason.KEY_RING_QUOTA,
                )
            try:
                tx.create_key_ring(KeyRing(ring_id, ctx.tenant, now, ctx.actor))
            except AlreadyExists:  # pragma: no cover - the list above is in the same transaction
                return False
        return True

    def delete(self, ctx: CallContext, ring_id: str, *, force: bool = False) -> None:
        validate_ring_id(ring_id)
        refuse_default(ring_id, "deleted")
        now = self._clock.now()
        with self._store.transaction() as tx:
            if not any(ring.id == ring_id for ring in tx.list_key_rings(ctx.tenant)):
                raise NotFound("Key ring does not exist", reason=Reason.KEY_RING_NOT_FOUND)
            in_ring = KeyQuery(key_ring=ring_id)
            total = tx.count_keys(ctx.tenant, in_ring)
            if total:
                if not force:
                    raise Conflict(
                        "The specified key ring contains at least one key (in any state).",
                        reason=Reason.KEY_RING_NOT_EMPTY,
                    )
                live = KeyQuery(
                    states=[KeyState.ACTIVE, KeyState.SUSPENDED, KeyState.DEACTIVATED], key_ring=ring_id
                )
                if tx.count_keys(ctx.tenant, live):
                    raise Conflict(
                        "The specified key ring contains at least one key that is not in the "
                        "Destroyed (5) state.",
                        reason=Reason.KEY_RING_KEYS_NOT_DELETED,
                    )
                self._move_to_default(tx, ctx, ring_id, total, now)
            tx.delete_key_ring(ctx.tenant, ring_id)

    @staticmethod
    def _move_to_default(
        tx: StoreTransaction, ctx: CallContext, ring_id: str, total: int, now: datetime
    ) -> None:
        for key in tx.list_keys(ctx.tenant, KeyQuery(key_ring=ring_id, limit=total)):
            key.key_ring = DEFAULT_KEY_RING
            key.updated_at = now
            # Inside the write transaction nobody can change the key between read and write,
            # so the optimistic check cannot fail here.
            tx.update_key(key)
