from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_RUNNING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_COMPLETED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_CANCELLED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PAUSED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_RECOVERY_FAILED: _ClassVar[ExecutionStatus]

class ResultOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_ORDER_UNSPECIFIED: _ClassVar[ResultOrder]
    RESULT_ORDER_BY_INDEX: _ClassVar[ResultOrder]
    RESULT_ORDER_BY_COMPLETION: _ClassVar[ResultOrder]

class TaskErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_ERROR_CODE_UNSPECIFIED: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_TIMEOUT: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_INVALID_INPUT: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_COMPONENT_FAILED: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_CANCELLED: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_UNREACHABLE: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_COMPONENT_NOT_FOUND: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_RESOURCE_UNAVAILABLE: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_EXPRESSION_FAILURE: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_ORCHESTRATOR_ERROR: _ClassVar[TaskErrorCode]
    TASK_ERROR_CODE_WORKER_ERROR: _ClassVar[TaskErrorCode]
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_RUNNING: ExecutionStatus
EXECUTION_STATUS_COMPLETED: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
EXECUTION_STATUS_CANCELLED: ExecutionStatus
EXECUTION_STATUS_PAUSED: ExecutionStatus
EXECUTION_STATUS_RECOVERY_FAILED: ExecutionStatus
RESULT_ORDER_UNSPECIFIED: ResultOrder
RESULT_ORDER_BY_INDEX: ResultOrder
RESULT_ORDER_BY_COMPLETION: ResultOrder
TASK_ERROR_CODE_UNSPECIFIED: TaskErrorCode
TASK_ERROR_CODE_TIMEOUT: TaskErrorCode
TASK_ERROR_CODE_INVALID_INPUT: TaskErrorCode
TASK_ERROR_CODE_COMPONENT_FAILED: TaskErrorCode
TASK_ERROR_CODE_CANCELLED: TaskErrorCode
TASK_ERROR_CODE_UNREACHABLE: TaskErrorCode
TASK_ERROR_CODE_COMPONENT_NOT_FOUND: TaskErrorCode
TASK_ERROR_CODE_RESOURCE_UNAVAILABLE: TaskErrorCode
TASK_ERROR_CODE_EXPRESSION_FAILURE: TaskErrorCode
TASK_ERROR_CODE_ORCHESTRATOR_ERROR: TaskErrorCode
TASK_ERROR_CODE_WORKER_ERROR: TaskErrorCode

class ObservabilityContext(_message.Message):
    __slots__ = ("trace_id", "span_id", "run_id", "flow_id", "step_id")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    span_id: str
    run_id: str
    flow_id: str
    step_id: str
    def __init__(self, trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., run_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., step_id: _Optional[str] = ...) -> None: ...

class ItemStatistics(_message.Message):
    __slots__ = ("total", "completed", "running", "failed", "cancelled")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    total: int
    completed: int
    running: int
    failed: int
    cancelled: int
    def __init__(self, total: _Optional[int] = ..., completed: _Optional[int] = ..., running: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ...) -> None: ...

class ItemResult(_message.Message):
    __slots__ = ("item_index", "status", "output", "error_message", "error_code", "completed_at")
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    item_index: int
    status: ExecutionStatus
    output: _struct_pb2.Value
    error_message: str
    error_code: TaskErrorCode
    completed_at: _timestamp_pb2.Timestamp
    def __init__(self, item_index: _Optional[int] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error_message: _Optional[str] = ..., error_code: _Optional[_Union[TaskErrorCode, str]] = ..., completed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
