from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class WrapRequest(_message.Message):
    __slots__ = ("key_id", "plaintext", "aad")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    AAD_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    plaintext: bytes
    aad: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_id: _Optional[str] = ..., plaintext: _Optional[bytes] = ..., aad: _Optional[_Iterable[str]] = ...) -> None: ...

class WrapResponse(_message.Message):
    __slots__ = ("ciphertext", "key_version_id", "plaintext")
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    key_version_id: str
    plaintext: bytes
    def __init__(self, ciphertext: _Optional[bytes] = ..., key_version_id: _Optional[str] = ..., plaintext: _Optional[bytes] = ...) -> None: ...

class UnwrapRequest(_message.Message):
    __slots__ = ("key_id", "ciphertext", "aad")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    AAD_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    ciphertext: bytes
    aad: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_id: _Optional[str] = ..., ciphertext: _Optional[bytes] = ..., aad: _Optional[_Iterable[str]] = ...) -> None: ...

class UnwrapResponse(_message.Message):
    __slots__ = ("plaintext", "key_version_id", "rewrapped_ciphertext", "rewrapped_key_version_id")
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    REWRAPPED_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    REWRAPPED_KEY_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    plaintext: bytes
    key_version_id: str
    rewrapped_ciphertext: bytes
    rewrapped_key_version_id: str
    def __init__(self, plaintext: _Optional[bytes] = ..., key_version_id: _Optional[str] = ..., rewrapped_ciphertext: _Optional[bytes] = ..., rewrapped_key_version_id: _Optional[str] = ...) -> None: ...

class RewrapRequest(_message.Message):
    __slots__ = ("key_id", "ciphertext", "aad")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    AAD_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    ciphertext: bytes
    aad: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_id: _Optional[str] = ..., ciphertext: _Optional[bytes] = ..., aad: _Optional[_Iterable[str]] = ...) -> None: ...

class RewrapResponse(_message.Message):
    __slots__ = ("ciphertext", "key_version_id", "rewrapped_key_version_id")
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    REWRAPPED_KEY_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    key_version_id: str
    rewrapped_key_version_id: str
    def __init__(self, ciphertext: _Optional[bytes] = ..., key_version_id: _Optional[str] = ..., rewrapped_key_version_id: _Optional[str] = ...) -> None: ...
