"""What the push service needs from a cloud KMS, and the retry policy every client shares.

A client speaks to one target account (a connection) with its decrypted credentials. Every call
either returns or raises `CloudError` (the cloud refused: its own error code in
``metadata["cloud_code"]``) or `CloudUnavailable` (refused connection, timeout, or 429/5xx after
the retries). Messages name the cloud, the operation and the cloud's code, never a credential.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from hsmbridge.core.backend import EXPORT_FALLBACK_SETTING, ExportWrapping
from hsmbridge.errors import CloudError, CloudUnavailable, Reason, Unsupported

log = logging.getLogger(__name__)
T = TypeVar("T")

#: seconds per request (connect and read); a push is a handful of small calls
DEFAULT_TIMEOUT = 10.0
#: attempts per call, including the first
DEFAULT_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class CloudKeySpec:
    """A key to create in the target (origin external)."""

    name: str
    description: str | None = None
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class ImportParameters:
    """What the target hands out for one import: its wrapping public key and an opaque token."""

    public_key_der: bytes
    wrapping: ExportWrapping
    #: AWS ImportToken / Huawei import_token; Key Protect: none (its nonce is the binding)
    token: bytes = b""
    #: Key Protect: the import token's nonce, to be AES-GCM-encrypted under the material
    nonce: bytes | None = None


@dataclass(frozen=True, slots=True)
class WrappedMaterial:
    encrypted_key: bytes
    #: Key Protect secure import: the nonce sealed under the material (ciphertext ‖ tag) and its IV
    encrypted_nonce: bytes | None = None
    iv: bytes | None = None


@dataclass(frozen=True, slots=True)
class Expiry:
    """`valid_to` as the target needs it; `text` is the caller's RFC 3339 string, echoed."""

    at: datetime
    text: str


@dataclass(slots=True)
class CloudKeyView:
    """The target's own view of a key, as its API shows it."""

    kms_id: str
    state: str
    params: dict[str, Any] = field(default_factory=dict)
    region: str | None = None
    #: the material is gone (deleted, expired): a same-material reimport is what brings it back
    needs_material: bool = False


class CloudClient(Protocol):
    cloud: str
    #: Key Protect creates root keys only by importing material into them
    creates_with_material: bool
    #: what the target calls its own view in the seed's shape: aws_param, ibm_param, huawei_param
    params_name: str

    def test(self) -> dict[str, Any]:
        """One cheap authenticated call: proves the URL and the credentials."""
        ...

    def create_key(
        self,
        spec: CloudKeySpec,
        *,
        material: WrappedMaterial | None = None,
        params: ImportParameters | None = None,
        expiry: Expiry | None = None,
    ) -> CloudKeyView: ...
    def describe(self, kms_id: str) -> CloudKeyView: ...
    def import_parameters(
        self, kms_id: str | None, available: Mapping[ExportWrapping, bool]
    ) -> ImportParameters: ...
    def import_material(
        self,
        kms_id: str,
        params: ImportParameters,
        material: WrappedMaterial,
        expiry: Expiry | None,
    ) -> CloudKeyView: ...


def choose_wrapping(
    cloud: str, preferred: tuple[ExportWrapping, ...], available: Mapping[ExportWrapping, bool]
) -> ExportWrapping:
    """The first wrapping the HSM does natively, else the first the software fallback can do:
    a native mechanism always beats moving the material through the daemon's memory."""
    for native in (True, False):
        for wrapping in preferred:
            if available.get(wrapping) is native:
                return wrapping
    raise Unsupported(
        f"{cloud} accepts only {', '.join(w.value for w in preferred)}, which this HSM cannot produce; "
        f"enable {EXPORT_FALLBACK_SETTING} for development tokens"
    )


def cloud_error(cloud: str, operation: str, code: str, status: int | None = None) -> CloudError:
    """The one way clients report a refusal: the cloud's code, where it happened, nothing else."""
    reason = Reason.CLOUD_AUTH_FAILED if status in (401, 403) else Reason.CLOUD_ERROR
    what = "refused the credentials" if reason is Reason.CLOUD_AUTH_FAILED else "refused"
    return CloudError(
        f"{cloud} {what} in {operation}: {code}",
        reason=reason,
        metadata={"cloud": cloud, "cloud_code": code, **({"cloud_status": str(status)} if status else {})},
    )


def unavailable(cloud: str, operation: str, detail: str) -> CloudUnavailable:
    return CloudUnavailable(
        f"{cloud} did not answer {operation}: {detail}", metadata={"cloud": cloud, "cloud_code": detail}
    )


class Retryable(Exception):
    """Raised inside a `with_retries` attempt: worth another try, after `delay` if given."""

    def __init__(self, final: CloudError, delay: float | None = None) -> None:
        super().__init__(final.message)
        self.final = final
        self.delay = delay


def with_retries(
    attempt: Callable[[], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `attempt` until it returns, raises something other than `Retryable`, or runs out of
    attempts (then the last `Retryable.final`). Exponential backoff with full jitter, or the
    server's Retry-After when it gave one (capped)."""
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except Retryable as retry:
            if number == attempts:
                raise retry.final from None
            delay = retry.delay if retry.delay is not None else random.uniform(0, base_delay * 2**number)  # noqa: S311
            log.info("cloud call failed (%s); retry %d in %.2f s", retry.final.reason, number, delay)
            sleep(min(delay, max_delay))
    raise AssertionError("unreachable")
