from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthCheckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthCheckResponse(_message.Message):
    __slots__ = ("status", "timestamp", "build")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    status: str
    timestamp: _timestamp_pb2.Timestamp
    build: BuildInfo
    def __init__(self, status: _Optional[str] = ..., timestamp: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., build: _Optional[_Union[BuildInfo, _Mapping]] = ...) -> None: ...

class BuildInfo(_message.Message):
    __slots__ = ("git_version", "dirty", "rustc_version", "profile", "features", "target")
    GIT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DIRTY_FIELD_NUMBER: _ClassVar[int]
    RUSTC_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    git_version: str
    dirty: bool
    rustc_version: str
    profile: str
    features: _containers.RepeatedScalarFieldContainer[str]
    target: str
    def __init__(self, git_version: _Optional[str] = ..., dirty: bool = ..., rustc_version: _Optional[str] = ..., profile: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., target: _Optional[str] = ...) -> None: ...
