from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetHsmInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HsmCapabilities(_message.Message):
    __slots__ = ("aes_gcm", "aes_key_wrap", "aes_key_wrap_pad", "rsa_oaep_sha1", "rsa_oaep_sha256", "rsa_x509", "trusted_kek", "oaep_sha256_fallback", "gcm_length_query", "token_data_objects", "aes_key_wrap_kwp", "wrap_length_query", "long_secrets")
    AES_GCM_FIELD_NUMBER: _ClassVar[int]
    AES_KEY_WRAP_FIELD_NUMBER: _ClassVar[int]
    AES_KEY_WRAP_PAD_FIELD_NUMBER: _ClassVar[int]
    RSA_OAEP_SHA1_FIELD_NUMBER: _ClassVar[int]
    RSA_OAEP_SHA256_FIELD_NUMBER: _ClassVar[int]
    RSA_X509_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_KEK_FIELD_NUMBER: _ClassVar[int]
    OAEP_SHA256_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    GCM_LENGTH_QUERY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_DATA_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    AES_KEY_WRAP_KWP_FIELD_NUMBER: _ClassVar[int]
    WRAP_LENGTH_QUERY_FIELD_NUMBER: _ClassVar[int]
    LONG_SECRETS_FIELD_NUMBER: _ClassVar[int]
    aes_gcm: bool
    aes_key_wrap: bool
    aes_key_wrap_pad: bool
    rsa_oaep_sha1: bool
    rsa_oaep_sha256: bool
    rsa_x509: bool
    trusted_kek: bool
    oaep_sha256_fallback: bool
    gcm_length_query: bool
    token_data_objects: bool
    aes_key_wrap_kwp: bool
    wrap_length_query: bool
    long_secrets: bool
    def __init__(self, aes_gcm: _Optional[bool] = ..., aes_key_wrap: _Optional[bool] = ..., aes_key_wrap_pad: _Optional[bool] = ..., rsa_oaep_sha1: _Optional[bool] = ..., rsa_oaep_sha256: _Optional[bool] = ..., rsa_x509: _Optional[bool] = ..., trusted_kek: _Optional[bool] = ..., oaep_sha256_fallback: _Optional[bool] = ..., gcm_length_query: _Optional[bool] = ..., token_data_objects: _Optional[bool] = ..., aes_key_wrap_kwp: _Optional[bool] = ..., wrap_length_query: _Optional[bool] = ..., long_secrets: _Optional[bool] = ...) -> None: ...

class HsmToken(_message.Message):
    __slots__ = ("name", "module", "token_label", "state", "active", "kek_check", "failures", "last_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_LABEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    KEK_CHECK_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    module: str
    token_label: str
    state: str
    active: bool
    kek_check: str
    failures: int
    last_error: str
    def __init__(self, name: _Optional[str] = ..., module: _Optional[str] = ..., token_label: _Optional[str] = ..., state: _Optional[str] = ..., active: _Optional[bool] = ..., kek_check: _Optional[str] = ..., failures: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class HsmInfo(_message.Message):
    __slots__ = ("library_path", "manufacturer", "library_description", "library_version", "token_label", "token_serial", "token_model", "kek_label", "session_pool_size", "capabilities", "tokens")
    LIBRARY_PATH_FIELD_NUMBER: _ClassVar[int]
    MANUFACTURER_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_LABEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SERIAL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_MODEL_FIELD_NUMBER: _ClassVar[int]
    KEK_LABEL_FIELD_NUMBER: _ClassVar[int]
    SESSION_POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    library_path: str
    manufacturer: str
    library_description: str
    library_version: str
    token_label: str
    token_serial: str
    token_model: str
    kek_label: str
    session_pool_size: int
    capabilities: HsmCapabilities
    tokens: _containers.RepeatedCompositeFieldContainer[HsmToken]
    def __init__(self, library_path: _Optional[str] = ..., manufacturer: _Optional[str] = ..., library_description: _Optional[str] = ..., library_version: _Optional[str] = ..., token_label: _Optional[str] = ..., token_serial: _Optional[str] = ..., token_model: _Optional[str] = ..., kek_label: _Optional[str] = ..., session_pool_size: _Optional[int] = ..., capabilities: _Optional[_Union[HsmCapabilities, _Mapping]] = ..., tokens: _Optional[_Iterable[_Union[HsmToken, _Mapping]]] = ...) -> None: ...
