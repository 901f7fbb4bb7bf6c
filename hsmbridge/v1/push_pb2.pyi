import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateConnectionRequest(_message.Message):
    __slots__ = ("name", "cloud", "settings", "secrets", "timeout")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    cloud: str
    settings: _containers.ScalarMap[str, str]
    secrets: _containers.ScalarMap[str, str]
    timeout: float
    def __init__(self, name: _Optional[str] = ..., cloud: _Optional[str] = ..., settings: _Optional[_Mapping[str, str]] = ..., secrets: _Optional[_Mapping[str, str]] = ..., timeout: _Optional[float] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("id", "name", "cloud", "settings", "secrets_set", "created_by", "create_time", "update_time")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_SET_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    cloud: str
    settings: _containers.ScalarMap[str, str]
    secrets_set: _containers.RepeatedScalarFieldContainer[str]
    created_by: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., cloud: _Optional[str] = ..., settings: _Optional[_Mapping[str, str]] = ..., secrets_set: _Optional[_Iterable[str]] = ..., created_by: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListConnectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListConnectionsResponse(_message.Message):
    __slots__ = ("connections",)
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    connections: _containers.RepeatedCompositeFieldContainer[Connection]
    def __init__(self, connections: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ...) -> None: ...

class GetConnectionRequest(_message.Message):
    __slots__ = ("connection",)
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    connection: str
    def __init__(self, connection: _Optional[str] = ...) -> None: ...

class DeleteConnectionRequest(_message.Message):
    __slots__ = ("connection",)
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    connection: str
    def __init__(self, connection: _Optional[str] = ...) -> None: ...

class DeleteConnectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TestConnectionRequest(_message.Message):
    __slots__ = ("connection",)
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    connection: str
    def __init__(self, connection: _Optional[str] = ...) -> None: ...

class TestConnectionResponse(_message.Message):
    __slots__ = ("ok", "details")
    OK_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    details: _struct_pb2.Struct
    def __init__(self, ok: _Optional[bool] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CloudKey(_message.Message):
    __slots__ = ("id", "cloud", "connection_id", "kms_id", "region", "local_key_id", "local_key_name", "local_key_version_id", "key_check_value", "key_expiration", "valid_to", "cloud_params", "key_material_origin", "synced_time", "push_time", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    KMS_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    LOCAL_KEY_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_CHECK_VALUE_FIELD_NUMBER: _ClassVar[int]
    KEY_EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    VALID_TO_FIELD_NUMBER: _ClassVar[int]
    CLOUD_PARAMS_FIELD_NUMBER: _ClassVar[int]
    KEY_MATERIAL_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SYNCED_TIME_FIELD_NUMBER: _ClassVar[int]
    PUSH_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    cloud: str
    connection_id: str
    kms_id: str
    region: str
    local_key_id: str
    local_key_name: str
    local_key_version_id: str
    key_check_value: str
    key_expiration: bool
    valid_to: str
    cloud_params: _struct_pb2.Struct
    key_material_origin: str
    synced_time: _timestamp_pb2.Timestamp
    push_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., cloud: _Optional[str] = ..., connection_id: _Optional[str] = ..., kms_id: _Optional[str] = ..., region: _Optional[str] = ..., local_key_id: _Optional[str] = ..., local_key_name: _Optional[str] = ..., local_key_version_id: _Optional[str] = ..., key_check_value: _Optional[str] = ..., key_expiration: _Optional[bool] = ..., valid_to: _Optional[str] = ..., cloud_params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., key_material_origin: _Optional[str] = ..., synced_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., push_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MaterialSource(_message.Message):
    __slots__ = ("source_key_tier", "source_key_identifier", "key_expiration", "valid_to")
    SOURCE_KEY_TIER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    KEY_EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    VALID_TO_FIELD_NUMBER: _ClassVar[int]
    source_key_tier: str
    source_key_identifier: str
    key_expiration: bool
    valid_to: str
    def __init__(self, source_key_tier: _Optional[str] = ..., source_key_identifier: _Optional[str] = ..., key_expiration: _Optional[bool] = ..., valid_to: _Optional[str] = ...) -> None: ...

class CreateCloudKeyRequest(_message.Message):
    __slots__ = ("cloud", "connection", "name", "description", "alias", "kms_id", "source")
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    KMS_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    cloud: str
    connection: str
    name: str
    description: str
    alias: str
    kms_id: str
    source: MaterialSource
    def __init__(self, cloud: _Optional[str] = ..., connection: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., alias: _Optional[str] = ..., kms_id: _Optional[str] = ..., source: _Optional[_Union[MaterialSource, _Mapping]] = ...) -> None: ...

class ListCloudKeysRequest(_message.Message):
    __slots__ = ("cloud",)
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    cloud: str
    def __init__(self, cloud: _Optional[str] = ...) -> None: ...

class ListCloudKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[CloudKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[CloudKey, _Mapping]]] = ...) -> None: ...

class GetCloudKeyRequest(_message.Message):
    __slots__ = ("cloud", "id", "sync")
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    cloud: str
    id: str
    sync: bool
    def __init__(self, cloud: _Optional[str] = ..., id: _Optional[str] = ..., sync: _Optional[bool] = ...) -> None: ...

class DeleteCloudKeyRequest(_message.Message):
    __slots__ = ("cloud", "id")
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    cloud: str
    id: str
    def __init__(self, cloud: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class DeleteCloudKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImportMaterialRequest(_message.Message):
    __slots__ = ("cloud", "id", "source")
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    cloud: str
    id: str
    source: MaterialSource
    def __init__(self, cloud: _Optional[str] = ..., id: _Optional[str] = ..., source: _Optional[_Union[MaterialSource, _Mapping]] = ...) -> None: ...
