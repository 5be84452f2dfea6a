from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListRegisteredComponentsRequest(_message.Message):
    __slots__ = ("exclude_schemas",)
    EXCLUDE_SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    exclude_schemas: bool
    def __init__(self, exclude_schemas: bool = ...) -> None: ...

class ListRegisteredComponentsResponse(_message.Message):
    __slots__ = ("components", "complete", "failed_plugins")
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FAILED_PLUGINS_FIELD_NUMBER: _ClassVar[int]
    components: _containers.RepeatedCompositeFieldContainer[ComponentInfoEntry]
    complete: bool
    failed_plugins: _containers.RepeatedCompositeFieldContainer[PluginDiscoveryError]
    def __init__(self, components: _Optional[_Iterable[_Union[ComponentInfoEntry, _Mapping]]] = ..., complete: bool = ..., failed_plugins: _Optional[_Iterable[_Union[PluginDiscoveryError, _Mapping]]] = ...) -> None: ...

class PluginDiscoveryError(_message.Message):
    __slots__ = ("plugin", "error")
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    plugin: str
    error: str
    def __init__(self, plugin: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ComponentInfoEntry(_message.Message):
    __slots__ = ("component_id", "description", "input_schema", "output_schema", "path", "plugin")
    COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    component_id: str
    description: str
    input_schema: _struct_pb2.Struct
    output_schema: _struct_pb2.Struct
    path: str
    plugin: str
    def __init__(self, component_id: _Optional[str] = ..., description: _Optional[str] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., path: _Optional[str] = ..., plugin: _Optional[str] = ...) -> None: ...
