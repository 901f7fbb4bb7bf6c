import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyWrapping(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_WRAPPING_UNSPECIFIED: _ClassVar[KeyWrapping]
    KEY_WRAPPING_RSA_OAEP_SHA256: _ClassVar[KeyWrapping]
    KEY_WRAPPING_RSA_OAEP_SHA1: _ClassVar[KeyWrapping]
    KEY_WRAPPING_RSA_PKCS1_V1_5: _ClassVar[KeyWrapping]
KEY_WRAPPING_UNSPECIFIED: KeyWrapping
KEY_WRAPPING_RSA_OAEP_SHA256: KeyWrapping
KEY_WRAPPING_RSA_OAEP_SHA1: KeyWrapping
KEY_WRAPPING_RSA_PKCS1_V1_5: KeyWrapping

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

class GetImportParametersRequest(_message.Message):
    __slots__ = ("key_id", "wrapping")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    WRAPPING_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    wrapping: KeyWrapping
    def __init__(self, key_id: _Optional[str] = ..., wrapping: _Optional[_Union[KeyWrapping, str]] = ...) -> None: ...

class ImportParameters(_message.Message):
    __slots__ = ("key_id", "public_key_der", "import_token", "expire_time")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_DER_FIELD_NUMBER: _ClassVar[int]
    IMPORT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key_der: bytes
    import_token: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., public_key_der: _Optional[bytes] = ..., import_token: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
