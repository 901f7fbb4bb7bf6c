import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    KEY_STATE_ACTIVE: _ClassVar[KeyState]
    KEY_STATE_SUSPENDED: _ClassVar[KeyState]
    KEY_STATE_DEACTIVATED: _ClassVar[KeyState]
    KEY_STATE_DESTROYED: _ClassVar[KeyState]

class OaepHash(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OAEP_HASH_UNSPECIFIED: _ClassVar[OaepHash]
    OAEP_HASH_SHA1: _ClassVar[OaepHash]
    OAEP_HASH_SHA256: _ClassVar[OaepHash]
KEY_STATE_UNSPECIFIED: KeyState
KEY_STATE_ACTIVE: KeyState
KEY_STATE_SUSPENDED: KeyState
KEY_STATE_DEACTIVATED: KeyState
KEY_STATE_DESTROYED: KeyState
OAEP_HASH_UNSPECIFIED: OaepHash
OAEP_HASH_SHA1: OaepHash
OAEP_HASH_SHA256: OaepHash

class KeyVersion(_message.Message):
    __slots__ = ("id", "number", "create_time", "key_check_value")
    ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_CHECK_VALUE_FIELD_NUMBER: _ClassVar[int]
    id: str
    number: int
    create_time: _timestamp_pb2.Timestamp
    key_check_value: str
    def __init__(self, id: _Optional[str] = ..., number: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_check_value: _Optional[str] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("id", "name", "description", "extractable", "imported", "state", "key_ring", "aliases", "bit_length", "current_version", "create_time", "created_by", "update_time", "rotate_time", "expire_time", "delete_time", "deleted_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXTRACTABLE_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_RING_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    BIT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROTATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    extractable: bool
    imported: bool
    state: KeyState
    key_ring: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    bit_length: int
    current_version: KeyVersion
    create_time: _timestamp_pb2.Timestamp
    created_by: str
    update_time: _timestamp_pb2.Timestamp
    rotate_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    deleted_by: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., extractable: _Optional[bool] = ..., imported: _Optional[bool] = ..., state: _Optional[_Union[KeyState, str]] = ..., key_ring: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., bit_length: _Optional[int] = ..., current_version: _Optional[_Union[KeyVersion, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rotate_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted_by: _Optional[str] = ...) -> None: ...

class SecureMaterial(_message.Message):
    __slots__ = ("encrypted_key", "iv", "encrypted_nonce", "oaep_hash")
    ENCRYPTED_KEY_FIELD_NUMBER: _ClassVar[int]
    IV_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_NONCE_FIELD_NUMBER: _ClassVar[int]
    OAEP_HASH_FIELD_NUMBER: _ClassVar[int]
    encrypted_key: bytes
    iv: bytes
    encrypted_nonce: bytes
    oaep_hash: OaepHash
    def __init__(self, encrypted_key: _Optional[bytes] = ..., iv: _Optional[bytes] = ..., encrypted_nonce: _Optional[bytes] = ..., oaep_hash: _Optional[_Union[OaepHash, str]] = ...) -> None: ...

class KeyMaterial(_message.Message):
    __slots__ = ("plaintext", "secure")
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    plaintext: bytes
    secure: SecureMaterial
    def __init__(self, plaintext: _Optional[bytes] = ..., secure: _Optional[_Union[SecureMaterial, _Mapping]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("name", "description", "extractable", "aliases", "expire_time", "key_ring", "dual_auth_delete")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXTRACTABLE_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_RING_FIELD_NUMBER: _ClassVar[int]
    DUAL_AUTH_DELETE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    extractable: bool
    aliases: _containers.RepeatedScalarFieldContainer[str]
    expire_time: _timestamp_pb2.Timestamp
    key_ring: str
    dual_auth_delete: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., extractable: _Optional[bool] = ..., aliases: _Optional[_Iterable[str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_ring: _Optional[str] = ..., dual_auth_delete: _Optional[bool] = ...) -> None: ...

class ImportKeyRequest(_message.Message):
    __slots__ = ("key", "material")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MATERIAL_FIELD_NUMBER: _ClassVar[int]
    key: CreateKeyRequest
    material: KeyMaterial
    def __init__(self, key: _Optional[_Union[CreateKeyRequest, _Mapping]] = ..., material: _Optional[_Union[KeyMaterial, _Mapping]] = ...) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class GetKeyPayloadRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class GetKeyPayloadResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("limit", "offset", "states", "extractable", "key_ring")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    EXTRACTABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_RING_FIELD_NUMBER: _ClassVar[int]
    limit: int
    offset: int
    states: _containers.RepeatedScalarFieldContainer[KeyState]
    extractable: bool
    key_ring: str
    def __init__(self, limit: _Optional[int] = ..., offset: _Optional[int] = ..., states: _Optional[_Iterable[_Union[KeyState, str]]] = ..., extractable: _Optional[bool] = ..., key_ring: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys", "total")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    total: int
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ("key_id", "material")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MATERIAL_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    material: KeyMaterial
    def __init__(self, key_id: _Optional[str] = ..., material: _Optional[_Union[KeyMaterial, _Mapping]] = ...) -> None: ...

class SetKeyStateRequest(_message.Message):
    __slots__ = ("key_id", "state")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    state: KeyState
    def __init__(self, key_id: _Optional[str] = ..., state: _Optional[_Union[KeyState, str]] = ...) -> None: ...

class DeleteKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class ListKeyVersionsRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class ListKeyVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ...) -> None: ...

class CreateExternalKeyRequest(_message.Message):
    __slots__ = ("alias", "description")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    alias: str
    description: str
    def __init__(self, alias: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ExternalKey(_message.Message):
    __slots__ = ("key", "alias", "description", "material_present", "material_expire_time", "scheduled_deletion_time")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MATERIAL_PRESENT_FIELD_NUMBER: _ClassVar[int]
    MATERIAL_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_DELETION_TIME_FIELD_NUMBER: _ClassVar[int]
    key: Key
    alias: str
    description: str
    material_present: bool
    material_expire_time: _timestamp_pb2.Timestamp
    scheduled_deletion_time: _timestamp_pb2.Timestamp
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., alias: _Optional[str] = ..., description: _Optional[str] = ..., material_present: _Optional[bool] = ..., material_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scheduled_deletion_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ImportKeyMaterialRequest(_message.Message):
    __slots__ = ("key_id", "import_token", "encrypted_key_material", "material_expire_time")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    IMPORT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_KEY_MATERIAL_FIELD_NUMBER: _ClassVar[int]
    MATERIAL_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    import_token: str
    encrypted_key_material: bytes
    material_expire_time: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., import_token: _Optional[str] = ..., encrypted_key_material: _Optional[bytes] = ..., material_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeleteKeyMaterialRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...
