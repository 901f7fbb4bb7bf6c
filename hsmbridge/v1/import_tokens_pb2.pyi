import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateImportTokenRequest(_message.Message):
    __slots__ = ("expiration_seconds", "max_retrievals", "key_bits")
    EXPIRATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIEVALS_FIELD_NUMBER: _ClassVar[int]
    KEY_BITS_FIELD_NUMBER: _ClassVar[int]
    expiration_seconds: int
    max_retrievals: int
    key_bits: int
    def __init__(self, expiration_seconds: _Optional[int] = ..., max_retrievals: _Optional[int] = ..., key_bits: _Optional[int] = ...) -> None: ...

class GetImportTokenRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImportToken(_message.Message):
    __slots__ = ("id", "create_time", "expire_time", "max_retrievals", "remaining_retrievals", "key_bits", "public_key_der", "public_key_pem", "nonce")
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIEVALS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_RETRIEVALS_FIELD_NUMBER: _ClassVar[int]
    KEY_BITS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_DER_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    max_retrievals: int
    remaining_retrievals: int
    key_bits: int
    public_key_der: bytes
    public_key_pem: str
    nonce: bytes
    def __init__(self, id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_retrievals: _Optional[int] = ..., remaining_retrievals: _Optional[int] = ..., key_bits: _Optional[int] = ..., public_key_der: _Optional[bytes] = ..., public_key_pem: _Optional[str] = ..., nonce: _Optional[bytes] = ...) -> None: ...
