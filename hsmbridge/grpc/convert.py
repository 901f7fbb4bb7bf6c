"""Domain objects → protobuf messages (and the few enums back)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from hsmbridge.core.backend import Capabilities, HsmInfo, OaepHash
from hsmbridge.core.import_tokens import SecureImport
from hsmbridge.core.model import ImportToken, Key, KeyState, KeyVersion
from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.v1 import hsm_pb2, import_tokens_pb2, keys_pb2


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def key_version(version: KeyVersion, check_value: str | None = None) -> keys_pb2.KeyVersion:
    return keys_pb2.KeyVersion(
        id=version.id,
        number=version.number,
        create_time=timestamp(version.created_at),
        key_check_value=check_value or "",
    )


def key(value: Key, current: KeyVersion | None = None, check_value: str | None = None) -> keys_pb2.Key:
    message = keys_pb2.Key(
        id=value.id,
        name=value.name,
        description=value.description or "",
        extractable=value.extractable,
        imported=value.imported,
        state=int(value.state),
        key_ring=value.key_ring,
        aliases=value.aliases,
        bit_length=value.bit_length,
        created_by=value.created_by,
        deleted_by=value.deleted_by or "",
        create_time=timestamp(value.created_at),
        update_time=timestamp(value.updated_at),
        rotate_time=timestamp(value.last_rotated_at),
        expire_time=timestamp(value.expires_at),
        delete_time=timestamp(value.deleted_at),
    )
    message.current_version.id = value.current_version_id
    if current is not None:
        message.current_version.CopyFrom(key_version(current, check_value))
    return message


def key_state(value: int) -> KeyState:
    try:
        return KeyState(value)
    except ValueError:
        raise InvalidInput("unknown key state", reason=Reason.INVALID_FIELD, target="state") from None


def oaep_hash(value: int) -> OaepHash:
    return OaepHash.SHA1 if value == keys_pb2.OAEP_HASH_SHA1 else OaepHash.SHA256


def secure_material(message: keys_pb2.SecureMaterial) -> SecureImport:
    return SecureImport(
        encrypted_key=message.encrypted_key,
        iv=message.iv,
        encrypted_nonce=message.encrypted_nonce,
        oaep_hash=oaep_hash(message.oaep_hash),
    )


def import_token(token: ImportToken, *, with_secret: bool) -> import_tokens_pb2.ImportToken:
    message = import_tokens_pb2.ImportToken(
        id=token.id,
        create_time=timestamp(token.created_at),
        expire_time=timestamp(token.expires_at),
        max_retrievals=token.max_retrievals,
        remaining_retrievals=token.remaining_retrievals,
        key_bits=token.key_bits,
    )
    if with_secret:
        from cryptography.hazmat.primitives import serialization

        public = serialization.load_der_public_key(token.public_key_der)
        message.public_key_der = token.public_key_der
        message.public_key_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        message.nonce = token.nonce
    return message


def capabilities(caps: Capabilities) -> hsm_pb2.HsmCapabilities:
    return hsm_pb2.HsmCapabilities(**caps.as_dict())


def hsm_info(info: HsmInfo) -> hsm_pb2.HsmInfo:
    return hsm_pb2.HsmInfo(
        library_path=info.library_path,
        manufacturer=info.manufacturer,
        library_description=info.library_description,
        library_version=info.library_version,
        token_label=info.token_label,
        token_serial=info.token_serial,
        token_model=info.token_model,
        kek_label=info.kek_label,
        session_pool_size=info.session_pool_size,
        capabilities=capabilities(info.capabilities),
        tokens=[hsm_pb2.HsmToken(**asdict(token)) for token in info.tokens],
    )
