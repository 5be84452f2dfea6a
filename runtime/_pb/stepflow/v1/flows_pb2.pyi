from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DiagnosticLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIAGNOSTIC_LEVEL_UNSPECIFIED: _ClassVar[DiagnosticLevel]
    DIAGNOSTIC_LEVEL_FATAL: _ClassVar[DiagnosticLevel]
    DIAGNOSTIC_LEVEL_ERROR: _ClassVar[DiagnosticLevel]
    DIAGNOSTIC_LEVEL_WARNING: _ClassVar[DiagnosticLevel]
DIAGNOSTIC_LEVEL_UNSPECIFIED: DiagnosticLevel
DIAGNOSTIC_LEVEL_FATAL: DiagnosticLevel
DIAGNOSTIC_LEVEL_ERROR: DiagnosticLevel
DIAGNOSTIC_LEVEL_WARNING: DiagnosticLevel

class StoreFlowRequest(_message.Message):
    __slots__ = ("flow", "dry_run")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    flow: _struct_pb2.Struct
    dry_run: bool
    def __init__(self, flow: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dry_run: bool = ...) -> None: ...

class StoreFlowResponse(_message.Message):
    __slots__ = ("flow_id", "stored", "diagnostics")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    stored: bool
    diagnostics: Diagnostics
    def __init__(self, flow_id: _Optional[str] = ..., stored: bool = ..., diagnostics: _Optional[_Union[Diagnostics, _Mapping]] = ...) -> None: ...

class GetFlowRequest(_message.Message):
    __slots__ = ("flow_id",)
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    def __init__(self, flow_id: _Optional[str] = ...) -> None: ...

class GetFlowResponse(_message.Message):
    __slots__ = ("flow", "flow_id", "all_examples")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    flow: _struct_pb2.Struct
    flow_id: str
    all_examples: _containers.RepeatedCompositeFieldContainer[ExampleInput]
    def __init__(self, flow: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., flow_id: _Optional[str] = ..., all_examples: _Optional[_Iterable[_Union[ExampleInput, _Mapping]]] = ...) -> None: ...

class DeleteFlowRequest(_message.Message):
    __slots__ = ("flow_id",)
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    def __init__(self, flow_id: _Optional[str] = ...) -> None: ...

class DeleteFlowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFlowVariablesRequest(_message.Message):
    __slots__ = ("flow_id",)
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    def __init__(self, flow_id: _Optional[str] = ...) -> None: ...

class GetFlowVariablesResponse(_message.Message):
    __slots__ = ("flow_id", "variables")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FlowVariable
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FlowVariable, _Mapping]] = ...) -> None: ...
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    variables: _containers.MessageMap[str, FlowVariable]
    def __init__(self, flow_id: _Optional[str] = ..., variables: _Optional[_Mapping[str, FlowVariable]] = ...) -> None: ...

class FlowVariable(_message.Message):
    __slots__ = ("description", "default_value", "required", "schema", "env_var")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    ENV_VAR_FIELD_NUMBER: _ClassVar[int]
    description: str
    default_value: _struct_pb2.Value
    required: bool
    schema: _struct_pb2.Struct
    env_var: str
    def __init__(self, description: _Optional[str] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., required: bool = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., env_var: _Optional[str] = ...) -> None: ...

class ExampleInput(_message.Message):
    __slots__ = ("name", "description", "input")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    input: _struct_pb2.Value
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class Diagnostics(_message.Message):
    __slots__ = ("diagnostics", "num_fatal", "num_error", "num_warning")
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    NUM_FATAL_FIELD_NUMBER: _ClassVar[int]
    NUM_ERROR_FIELD_NUMBER: _ClassVar[int]
    NUM_WARNING_FIELD_NUMBER: _ClassVar[int]
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    num_fatal: int
    num_error: int
    num_warning: int
    def __init__(self, diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., num_fatal: _Optional[int] = ..., num_error: _Optional[int] = ..., num_warning: _Optional[int] = ...) -> None: ...

class Diagnostic(_message.Message):
    __slots__ = ("kind", "code", "level", "formatted", "data", "path", "experimental")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    FORMATTED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENTAL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    code: int
    level: DiagnosticLevel
    formatted: str
    data: _struct_pb2.Value
    path: str
    experimental: bool
    def __init__(self, kind: _Optional[str] = ..., code: _Optional[int] = ..., level: _Optional[_Union[DiagnosticLevel, str]] = ..., formatted: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., path: _Optional[str] = ..., experimental: bool = ...) -> None: ...
