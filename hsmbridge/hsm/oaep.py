"""EME-OAEP decoding (RFC 8017 §7.1.2 step 3) for the raw-RSA fallback.

Why this exists: SoftHSM2 2.6.1 cannot do CKM_RSA_PKCS_OAEP with SHA-256, yet Key Protect's
import tokens let callers choose SHA-256. When the operator enables the fallback, the HSM does
only the private-key operation (CKM_RSA_X_509, so the key never leaves it) and the daemon strips
the OAEP padding here. No PKCS#11 in this module: it is pure byte arithmetic, testable alone.

Why it is written this way: a decoder that answers differently (error text, exception type or
*timing*) depending on which check failed is a padding oracle; Manger's attack recovers an
RSA-OAEP plaintext from whether the first byte Y was zero, in about a thousand queries. So:

- every check is computed, none short-circuits: Y, lHash, the PS bytes and the 0x01 separator
  are folded into one integer with branch-free masks over the *whole* DB, and the loop runs the
  same number of iterations whatever the data;
- lHash is compared with `hmac.compare_digest`;
- there is exactly one failure, `IntegrityError("decryption failed")`, raised after all checks.

CPython gives no constant-time guarantee (integer ops, allocation and the interpreter itself can
vary), so this removes the gross oracles, not every nanosecond of signal; the HSM's RSA blinding
and the service's uniform answer for every import failure do the rest.

Secrets we own (the unmasked seed and DB, our copy of EM) are zeroed before returning. The
caller's `em` is not ours to wipe; MGF1 digests are immutable `bytes` and cannot be wiped.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Literal

from hsmbridge.core.backend import wipe
from hsmbridge.errors import IntegrityError, InternalError

_HASHES: dict[str, Callable[..., hashlib._Hash]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}


def _failure() -> IntegrityError:
    """The one error: same type, reason and text for every cause."""
    return IntegrityError("decryption failed")


def _xor_mgf1(target: bytearray, seed: bytearray, new_hash: Callable[..., hashlib._Hash]) -> None:
    """target ^= MGF1(seed, len(target)), in place, so no separate mask buffer is left behind."""
    length = len(target)
    pos = 0
    counter = 0
    while pos < length:
        h = new_hash()
        h.update(seed)
        h.update(counter.to_bytes(4, "big"))
        block = h.digest()
        for j in range(min(len(block), length - pos)):
            target[pos + j] ^= block[j]
        pos += len(block)
        counter += 1


def oaep_decode(
    em: bytes | bytearray,
    *,
    k: int,
    hash_name: Literal["sha1", "sha256"],
    label: bytes = b"",
) -> bytearray:
    """Decode EM = Y || maskedSeed || maskedDB (the raw RSA output) and return the message M.

    `k` is the modulus length in bytes. `em` may be shorter than `k`: some tokens strip leading
    zero bytes from raw RSA output, and a valid EM always starts with one, so rejecting short
    input would itself reveal "Y was zero". It is left-padded to `k` instead, as OpenSSL does.
    MGF1 uses the same hash as lHash. Raises `IntegrityError("decryption failed")` for any
    defect; `InternalError` only for an unsupported `hash_name` (a bug, independent of data).
    """
    new_hash = _HASHES.get(hash_name)
    if new_hash is None:
        raise InternalError("unsupported OAEP hash")
    h_len = new_hash().digest_size
    # Public facts (key size, buffer length), not functions of the secret: early exit is fine.
    if k < 2 * h_len + 2 or len(em) > k:
        raise _failure()

    buf = bytearray(k)
    buf[k - len(em) :] = em
    seed = bytearray(buf[1 : 1 + h_len])  # masked seed
    db = bytearray(buf[1 + h_len :])  # masked DB, k - h_len - 1 bytes
    try:
        _xor_mgf1(seed, db, new_hash)  # seed = maskedSeed ^ MGF1(maskedDB)
        _xor_mgf1(db, seed, new_hash)  # DB = maskedDB ^ MGF1(seed)

        bad = buf[0]  # Y must be zero; nonzero bits here mean failure
        with memoryview(db) as view:
            bad |= hmac.compare_digest(view[:h_len], new_hash(label).digest()) ^ 1

        # DB = lHash || PS (zeros) || 0x01 || M: find the first 0x01 with every byte visited.
        found = 0  # 1 once the separator has been seen
        index = 0  # position of the separator in DB
        for i in range(h_len, len(db)):
            byte = db[i]
            is_zero = ((byte - 1) >> 8) & 1  # 1 iff byte == 0 (Python's >> floors: -1 >> 8 == -1)
            is_one = (((byte ^ 1) - 1) >> 8) & 1  # 1 iff byte == 1
            before = found ^ 1
            index |= -(before & is_one) & i  # record i only for the first 0x01
            bad |= before & (is_zero ^ 1) & (is_one ^ 1)  # a PS byte that is neither 0 nor 1
            found |= is_one
        bad |= found ^ 1  # no separator at all

        if bad:
            raise _failure()
        return db[index + 1 :]
    finally:
        wipe(buf)
        wipe(seed)
        wipe(db)
