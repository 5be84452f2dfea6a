from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import common_pb2 as _common_pb2
from . import runs_pb2 as _runs_pb2
from . import tasks_pb2 as _tasks_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_IN_PROGRESS: _ClassVar[TaskStatus]
    TASK_STATUS_ALREADY_CLAIMED: _ClassVar[TaskStatus]
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_IN_PROGRESS: TaskStatus
TASK_STATUS_ALREADY_CLAIMED: TaskStatus

class OrchestratorSubmitRunRequest(_message.Message):
    __slots__ = ("run_request", "subflow_key", "root_run_id")
    RUN_REQUEST_FIELD_NUMBER: _ClassVar[int]
    SUBFLOW_KEY_FIELD_NUMBER: _ClassVar[int]
    ROOT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_request: _runs_pb2.CreateRunRequest
    subflow_key: str
    root_run_id: str
    def __init__(self, run_request: _Optional[_Union[_runs_pb2.CreateRunRequest, _Mapping]] = ..., subflow_key: _Optional[str] = ..., root_run_id: _Optional[str] = ...) -> None: ...

class OrchestratorGetRunRequest(_message.Message):
    __slots__ = ("run_id", "wait", "include_results", "result_order", "timeout_secs", "root_run_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    RESULT_ORDER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    ROOT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    wait: bool
    include_results: bool
    result_order: _common_pb2.ResultOrder
    timeout_secs: int
    root_run_id: str
    def __init__(self, run_id: _Optional[str] = ..., wait: bool = ..., include_results: bool = ..., result_order: _Optional[_Union[_common_pb2.ResultOrder, str]] = ..., timeout_secs: _Optional[int] = ..., root_run_id: _Optional[str] = ...) -> None: ...

class OrchestratorRunStatus(_message.Message):
    __slots__ = ("run_id", "flow_id", "flow_name", "status", "items", "created_at", "completed_at", "results", "root_run_id", "parent_run_id", "created_at_seqno")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ROOT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_SEQNO_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    flow_id: str
    flow_name: str
    status: _common_pb2.ExecutionStatus
    items: _common_pb2.ItemStatistics
    created_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemResult]
    root_run_id: str
    parent_run_id: str
    created_at_seqno: int
    def __init__(self, run_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., flow_name: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.ExecutionStatus, str]] = ..., items: _Optional[_Union[_common_pb2.ItemStatistics, _Mapping]] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., results: _Optional[_Iterable[_Union[_common_pb2.ItemResult, _Mapping]]] = ..., root_run_id: _Optional[str] = ..., parent_run_id: _Optional[str] = ..., created_at_seqno: _Optional[int] = ...) -> None: ...

class TaskError(_message.Message):
    __slots__ = ("code", "message", "data")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.TaskErrorCode
    message: str
    data: _struct_pb2.Struct
    def __init__(self, code: _Optional[_Union[_common_pb2.TaskErrorCode, str]] = ..., message: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CompleteTaskRequest(_message.Message):
    __slots__ = ("task_id", "response", "error", "list_components", "run_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LIST_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    response: _tasks_pb2.ComponentExecuteResponse
    error: TaskError
    list_components: ListComponentsResult
    run_id: str
    def __init__(self, task_id: _Optional[str] = ..., response: _Optional[_Union[_tasks_pb2.ComponentExecuteResponse, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., list_components: _Optional[_Union[ListComponentsResult, _Mapping]] = ..., run_id: _Optional[str] = ...) -> None: ...

class ListComponentsResult(_message.Message):
    __slots__ = ("components",)
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    components: _containers.RepeatedCompositeFieldContainer[_tasks_pb2.ComponentInfo]
    def __init__(self, components: _Optional[_Iterable[_Union[_tasks_pb2.ComponentInfo, _Mapping]]] = ...) -> None: ...

class CompleteTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskHeartbeatRequest(_message.Message):
    __slots__ = ("task_id", "worker_id", "progress", "status_message", "run_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    worker_id: str
    progress: float
    status_message: str
    run_id: str
    def __init__(self, task_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., progress: _Optional[float] = ..., status_message: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class TaskHeartbeatResponse(_message.Message):
    __slots__ = ("should_abort", "status")
    SHOULD_ABORT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    should_abort: bool
    status: TaskStatus
    def __init__(self, should_abort: bool = ..., status: _Optional[_Union[TaskStatus, str]] = ...) -> None: ...
