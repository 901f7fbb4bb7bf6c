from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

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

class WrapBatchRequest(_message.Message):
    __slots__ = ("key_id", "items")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    items: _containers.RepeatedCompositeFieldContainer[WrapRequest]
    def __init__(self, key_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[WrapRequest, _Mapping]]] = ...) -> None: ...

class WrapBatchResult(_message.Message):
    __slots__ = ("status", "response")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    response: WrapResponse
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., response: _Optional[_Union[WrapResponse, _Mapping]] = ...) -> None: ...

class WrapBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[WrapBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[WrapBatchResult, _Mapping]]] = ...) -> None: ...

class UnwrapBatchRequest(_message.Message):
    __slots__ = ("key_id", "items")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    items: _containers.RepeatedCompositeFieldContainer[UnwrapRequest]
    def __init__(self, key_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[UnwrapRequest, _Mapping]]] = ...) -> None: ...

class UnwrapBatchResult(_message.Message):
    __slots__ = ("status", "response")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    response: UnwrapResponse
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., response: _Optional[_Union[UnwrapResponse, _Mapping]] = ...) -> None: ...

class UnwrapBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[UnwrapBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[UnwrapBatchResult, _Mapping]]] = ...) -> None: ...

class RewrapBatchRequest(_message.Message):
    __slots__ = ("key_id", "items")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    items: _containers.RepeatedCompositeFieldContainer[RewrapRequest]
    def __init__(self, key_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[RewrapRequest, _Mapping]]] = ...) -> None: ...

class RewrapBatchResult(_message.Message):
    __slots__ = ("status", "response")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    response: RewrapResponse
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., response: _Optional[_Union[RewrapResponse, _Mapping]] = ...) -> None: ...

class RewrapBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RewrapBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RewrapBatchResult, _Mapping]]] = ...) -> None: ...

class CryptoStreamRequest(_message.Message):
    __slots__ = ("sequence", "wrap", "unwrap", "rewrap")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    WRAP_FIELD_NUMBER: _ClassVar[int]
    UNWRAP_FIELD_NUMBER: _ClassVar[int]
    REWRAP_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    wrap: WrapBatchRequest
    unwrap: UnwrapBatchRequest
    rewrap: RewrapBatchRequest
    def __init__(self, sequence: _Optional[int] = ..., wrap: _Optional[_Union[WrapBatchRequest, _Mapping]] = ..., unwrap: _Optional[_Union[UnwrapBatchRequest, _Mapping]] = ..., rewrap: _Optional[_Union[RewrapBatchRequest, _Mapping]] = ...) -> None: ...

class CryptoStreamResponse(_message.Message):
    __slots__ = ("sequence", "wrap", "unwrap", "rewrap")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    WRAP_FIELD_NUMBER: _ClassVar[int]
    UNWRAP_FIELD_NUMBER: _ClassVar[int]
    REWRAP_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    wrap: WrapBatchResponse
    unwrap: UnwrapBatchResponse
    rewrap: RewrapBatchResponse
    def __init__(self, sequence: _Optional[int] = ..., wrap: _Optional[_Union[WrapBatchResponse, _Mapping]] = ..., unwrap: _Optional[_Union[UnwrapBatchResponse, _Mapping]] = ..., rewrap: _Optional[_Union[RewrapBatchResponse, _Mapping]] = ...) -> None: ...
