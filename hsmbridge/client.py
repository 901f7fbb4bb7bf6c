"""A small Python client for the gRPC API, mostly for bulk jobs.

    from hsmbridge.client import Client

    client = Client("127.0.0.1:50051", tenant="payments")
    for result in client.bulk_rewrap("payments-root", rows_of_wrapped_deks()):
        if result.ok:
            store(result.index, result.ciphertext)
        else:
            log(result.index, result.reason)

`bulk_rewrap` streams batches over one bidirectional `CryptoStream` call, so rewrapping a whole
table after a rotation costs one round trip per batch, not per row; results come back in input
order, one per item, and a bad item never stops the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2

from hsmbridge.grpc.limits import MESSAGE_SIZE_OPTIONS
from hsmbridge.v1 import (
    crypto_pb2,
    crypto_pb2_grpc,
    hsm_pb2_grpc,
    import_tokens_pb2_grpc,
    keys_pb2_grpc,
)

CiphertextItem = bytes | tuple[bytes, Sequence[str]]


@dataclass(frozen=True, slots=True)
class BulkResult:
    index: int
    ok: bool
    ciphertext: bytes = b""
    key_version_id: str = ""
    rewrapped_key_version_id: str = ""
    code: int = code_pb2.OK
    reason: str = ""
    message: str = ""


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


class Client:
    def __init__(
        self,
        target: str | grpc.Channel,
        tenant: str,
        *,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if isinstance(target, str):
            target = (
                grpc.secure_channel(target, credentials, options=MESSAGE_SIZE_OPTIONS)
                if credentials
                else grpc.insecure_channel(target, options=MESSAGE_SIZE_OPTIONS)
            )
        self.channel = target
        self.metadata: tuple[tuple[str, str], ...] = (("x-hsmbridge-tenant", tenant),)
        if token:
            self.metadata += (("authorization", f"Bearer {token}"),)
        self.keys = keys_pb2_grpc.KeyServiceStub(target)
        self.crypto = crypto_pb2_grpc.CryptoServiceStub(target)
        self.import_tokens = import_tokens_pb2_grpc.ImportTokenServiceStub(target)
        self.hsm = hsm_pb2_grpc.HsmServiceStub(target)

    def bulk_rewrap(
        self, key_id: str, ciphertexts: Iterable[CiphertextItem], *, batch_size: int = 500
    ) -> Iterator[BulkResult]:
        """Rewrap every ciphertext under `key_id`'s latest version. Items are `ciphertext` or
        `(ciphertext, aad)`; the input is consumed lazily, so it may be a database cursor."""
        if batch_size < 1:
            raise ValueError("batch_size must be positive")

        def batches() -> Iterator[crypto_pb2.CryptoStreamRequest]:
            batch = crypto_pb2.RewrapBatchRequest(key_id=key_id)
            sequence = 0
            for item in ciphertexts:
                ciphertext, aad = (item, ()) if isinstance(item, bytes) else item
                batch.items.add(ciphertext=ciphertext, aad=list(aad))
                if len(batch.items) == batch_size:
                    yield crypto_pb2.CryptoStreamRequest(sequence=sequence, rewrap=batch)
                    sequence += 1
                    batch = crypto_pb2.RewrapBatchRequest(key_id=key_id)
            if batch.items:
                yield crypto_pb2.CryptoStreamRequest(sequence=sequence, rewrap=batch)

        index = 0
        for response in self.crypto.CryptoStream(batches(), metadata=self.metadata):
            for result in response.rewrap.results:
                if result.status.code == code_pb2.OK:
                    yield BulkResult(
                        index,
                        True,
                        result.response.ciphertext,
                        result.response.key_version_id,
                        result.response.rewrapped_key_version_id,
                    )
                else:
                    yield BulkResult(
                        index,
                        False,
                        code=result.status.code,
                        reason=_reason(result.status),
                        message=result.status.message,
                    )
                index += 1

    def close(self) -> None:
        self.channel.close()
