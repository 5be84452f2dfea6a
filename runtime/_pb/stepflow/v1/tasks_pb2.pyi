from google.protobuf import struct_pb2 as _struct_pb2
from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PullTasksRequest(_message.Message):
    __slots__ = ("queue_name", "worker_id")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    worker_id: str
    def __init__(self, queue_name: _Optional[str] = ..., worker_id: _Optional[str] = ...) -> None: ...

class TaskAssignment(_message.Message):
    __slots__ = ("task_id", "execute", "list_components", "context", "heartbeat_interval_secs")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    LIST_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    execute: ComponentExecuteRequest
    list_components: ListComponentsRequest
    context: TaskContext
    heartbeat_interval_secs: int
    def __init__(self, task_id: _Optional[str] = ..., execute: _Optional[_Union[ComponentExecuteRequest, _Mapping]] = ..., list_components: _Optional[_Union[ListComponentsRequest, _Mapping]] = ..., context: _Optional[_Union[TaskContext, _Mapping]] = ..., heartbeat_interval_secs: _Optional[int] = ...) -> None: ...

class TaskContext(_message.Message):
    __slots__ = ("orchestrator_service_url", "root_run_id")
    ORCHESTRATOR_SERVICE_URL_FIELD_NUMBER: _ClassVar[int]
    ROOT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    orchestrator_service_url: str
    root_run_id: str
    def __init__(self, orchestrator_service_url: _Optional[str] = ..., root_run_id: _Optional[str] = ...) -> None: ...

class ComponentExecuteRequest(_message.Message):
    __slots__ = ("component_id", "input", "attempt", "observability", "path_params")
    class PathParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OBSERVABILITY_FIELD_NUMBER: _ClassVar[int]
    PATH_PARAMS_FIELD_NUMBER: _ClassVar[int]
    component_id: str
    input: _struct_pb2.Value
    attempt: int
    observability: _common_pb2.ObservabilityContext
    path_params: _containers.ScalarMap[str, str]
    def __init__(self, component_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., attempt: _Optional[int] = ..., observability: _Optional[_Union[_common_pb2.ObservabilityContext, _Mapping]] = ..., path_params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ComponentExecuteResponse(_message.Message):
    __slots__ = ("output",)
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    output: _struct_pb2.Value
    def __init__(self, output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class ListComponentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ComponentInfo(_message.Message):
    __slots__ = ("component_id", "description", "input_schema", "output_schema", "path")
    COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    component_id: str
    description: str
    input_schema: str
    output_schema: str
    path: str
    def __init__(self, component_id: _Optional[str] = ..., description: _Optional[str] = ..., input_schema: _Optional[str] = ..., output_schema: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ListComponentsResponse(_message.Message):
    __slots__ = ("components",)
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    components: _containers.RepeatedCompositeFieldContainer[ComponentInfo]
    def __init__(self, components: _Optional[_Iterable[_Union[ComponentInfo, _Mapping]]] = ...) -> None: ...

class ComponentInfoRequest(_message.Message):
    __slots__ = ("component_id",)
    COMPONENT_ID_FIELD_NUMBER: _ClassVar[int]
    component_id: str
    def __init__(self, component_id: _Optional[str] = ...) -> None: ...

class ComponentInfoResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ComponentInfo
    def __init__(self, info: _Optional[_Union[ComponentInfo, _Mapping]] = ...) -> None: ...

class GetOrchestratorForRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetOrchestratorForRunResponse(_message.Message):
    __slots__ = ("orchestrator_service_url",)
    ORCHESTRATOR_SERVICE_URL_FIELD_NUMBER: _ClassVar[int]
    orchestrator_service_url: str
    def __init__(self, orchestrator_service_url: _Optional[str] = ...) -> None: ...
