from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_EVENT_TYPE_UNSPECIFIED: _ClassVar[StatusEventType]
    STATUS_EVENT_TYPE_RUN_CREATED: _ClassVar[StatusEventType]
    STATUS_EVENT_TYPE_STEP_STARTED: _ClassVar[StatusEventType]
    STATUS_EVENT_TYPE_STEP_COMPLETED: _ClassVar[StatusEventType]
    STATUS_EVENT_TYPE_STEP_READY: _ClassVar[StatusEventType]
    STATUS_EVENT_TYPE_ITEM_COMPLETED: _ClassVar[StatusEventType]
    STATUS_EVENT_TYPE_RUN_COMPLETED: _ClassVar[StatusEventType]
    STATUS_EVENT_TYPE_SUB_RUN_CREATED: _ClassVar[StatusEventType]
    STATUS_EVENT_TYPE_STEPS_NEEDED: _ClassVar[StatusEventType]
STATUS_EVENT_TYPE_UNSPECIFIED: StatusEventType
STATUS_EVENT_TYPE_RUN_CREATED: StatusEventType
STATUS_EVENT_TYPE_STEP_STARTED: StatusEventType
STATUS_EVENT_TYPE_STEP_COMPLETED: StatusEventType
STATUS_EVENT_TYPE_STEP_READY: StatusEventType
STATUS_EVENT_TYPE_ITEM_COMPLETED: StatusEventType
STATUS_EVENT_TYPE_RUN_COMPLETED: StatusEventType
STATUS_EVENT_TYPE_SUB_RUN_CREATED: StatusEventType
STATUS_EVENT_TYPE_STEPS_NEEDED: StatusEventType

class CreateRunRequest(_message.Message):
    __slots__ = ("flow_id", "input", "overrides", "variables", "max_concurrency", "wait", "timeout_secs")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    input: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    overrides: _struct_pb2.Struct
    variables: _containers.MessageMap[str, _struct_pb2.Value]
    max_concurrency: int
    wait: bool
    timeout_secs: int
    def __init__(self, flow_id: _Optional[str] = ..., input: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., overrides: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., variables: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., max_concurrency: _Optional[int] = ..., wait: bool = ..., timeout_secs: _Optional[int] = ...) -> None: ...

class CreateRunResponse(_message.Message):
    __slots__ = ("summary", "results")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    summary: RunSummary
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemResult]
    def __init__(self, summary: _Optional[_Union[RunSummary, _Mapping]] = ..., results: _Optional[_Iterable[_Union[_common_pb2.ItemResult, _Mapping]]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("status", "flow_name", "root_run_id", "parent_run_id", "roots_only", "max_depth", "limit", "offset")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROOTS_ONLY_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.ExecutionStatus
    flow_name: str
    root_run_id: str
    parent_run_id: str
    roots_only: bool
    max_depth: int
    limit: int
    offset: int
    def __init__(self, status: _Optional[_Union[_common_pb2.ExecutionStatus, str]] = ..., flow_name: _Optional[str] = ..., root_run_id: _Optional[str] = ..., parent_run_id: _Optional[str] = ..., roots_only: bool = ..., max_depth: _Optional[int] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunSummary]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunSummary, _Mapping]]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id", "wait", "timeout_secs")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    wait: bool
    timeout_secs: int
    def __init__(self, run_id: _Optional[str] = ..., wait: bool = ..., timeout_secs: _Optional[int] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("summary", "steps")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    summary: RunSummary
    steps: _containers.RepeatedCompositeFieldContainer[StepStatus]
    def __init__(self, summary: _Optional[_Union[RunSummary, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[StepStatus, _Mapping]]] = ...) -> None: ...

class DeleteRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class DeleteRunResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CancelRunResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: RunSummary
    def __init__(self, summary: _Optional[_Union[RunSummary, _Mapping]] = ...) -> None: ...

class GetRunItemsRequest(_message.Message):
    __slots__ = ("run_id", "result_order")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_ORDER_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    result_order: _common_pb2.ResultOrder
    def __init__(self, run_id: _Optional[str] = ..., result_order: _Optional[_Union[_common_pb2.ResultOrder, str]] = ...) -> None: ...

class GetRunItemsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ItemResult]
    def __init__(self, results: _Optional[_Iterable[_Union[_common_pb2.ItemResult, _Mapping]]] = ...) -> None: ...

class GetRunFlowRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunFlowResponse(_message.Message):
    __slots__ = ("flow", "flow_id")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    flow: _struct_pb2.Struct
    flow_id: str
    def __init__(self, flow: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., flow_id: _Optional[str] = ...) -> None: ...

class GetRunStepsRequest(_message.Message):
    __slots__ = ("run_id", "item_index")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    item_index: int
    def __init__(self, run_id: _Optional[str] = ..., item_index: _Optional[int] = ...) -> None: ...

class GetRunStepsResponse(_message.Message):
    __slots__ = ("steps",)
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[StepStatus]
    def __init__(self, steps: _Optional[_Iterable[_Union[StepStatus, _Mapping]]] = ...) -> None: ...

class GetStepDetailRequest(_message.Message):
    __slots__ = ("run_id", "step_id", "item_index", "asof")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    ASOF_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step_id: str
    item_index: int
    asof: int
    def __init__(self, run_id: _Optional[str] = ..., step_id: _Optional[str] = ..., item_index: _Optional[int] = ..., asof: _Optional[int] = ...) -> None: ...

class GetStepDetailResponse(_message.Message):
    __slots__ = ("step",)
    STEP_FIELD_NUMBER: _ClassVar[int]
    step: StepStatus
    def __init__(self, step: _Optional[_Union[StepStatus, _Mapping]] = ...) -> None: ...

class GetRunEventsRequest(_message.Message):
    __slots__ = ("run_id", "since", "event_types", "include_sub_runs", "include_results")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUB_RUNS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    since: int
    event_types: _containers.RepeatedScalarFieldContainer[StatusEventType]
    include_sub_runs: bool
    include_results: bool
    def __init__(self, run_id: _Optional[str] = ..., since: _Optional[int] = ..., event_types: _Optional[_Iterable[_Union[StatusEventType, str]]] = ..., include_sub_runs: bool = ..., include_results: bool = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("run_id", "flow_id", "flow_name", "status", "items", "created_at", "completed_at", "root_run_id", "parent_run_id", "orchestrator_id", "created_at_seqno", "finished_at_seqno")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    ROOT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATOR_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_SEQNO_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_SEQNO_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    flow_id: str
    flow_name: str
    status: _common_pb2.ExecutionStatus
    items: _common_pb2.ItemStatistics
    created_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    root_run_id: str
    parent_run_id: str
    orchestrator_id: str
    created_at_seqno: int
    finished_at_seqno: int
    def __init__(self, run_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., flow_name: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.ExecutionStatus, str]] = ..., items: _Optional[_Union[_common_pb2.ItemStatistics, _Mapping]] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., root_run_id: _Optional[str] = ..., parent_run_id: _Optional[str] = ..., orchestrator_id: _Optional[str] = ..., created_at_seqno: _Optional[int] = ..., finished_at_seqno: _Optional[int] = ...) -> None: ...

class StepStatus(_message.Message):
    __slots__ = ("step_id", "step_index", "item_index", "status", "component", "output", "error_message", "error_code", "started_at", "completed_at", "journal_seqno", "updated_at")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_SEQNO_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    step_index: int
    item_index: int
    status: _common_pb2.ExecutionStatus
    component: str
    output: _struct_pb2.Value
    error_message: str
    error_code: _common_pb2.TaskErrorCode
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    journal_seqno: int
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, step_id: _Optional[str] = ..., step_index: _Optional[int] = ..., item_index: _Optional[int] = ..., status: _Optional[_Union[_common_pb2.ExecutionStatus, str]] = ..., component: _Optional[str] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error_message: _Optional[str] = ..., error_code: _Optional[_Union[_common_pb2.TaskErrorCode, str]] = ..., started_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., journal_seqno: _Optional[int] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StatusEvent(_message.Message):
    __slots__ = ("sequence_number", "timestamp", "run_created", "step_started", "step_completed", "step_ready", "item_completed", "run_completed", "sub_run_created", "steps_needed")
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RUN_CREATED_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_FIELD_NUMBER: _ClassVar[int]
    STEP_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    STEP_READY_FIELD_NUMBER: _ClassVar[int]
    ITEM_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    RUN_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    SUB_RUN_CREATED_FIELD_NUMBER: _ClassVar[int]
    STEPS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    sequence_number: int
    timestamp: _timestamp_pb2.Timestamp
    run_created: RunCreatedEvent
    step_started: StepStartedEvent
    step_completed: StepCompletedEvent
    step_ready: StepReadyEvent
    item_completed: ItemCompletedEvent
    run_completed: RunCompletedEvent
    sub_run_created: SubRunCreatedEvent
    steps_needed: StepsNeededEvent
    def __init__(self, sequence_number: _Optional[int] = ..., timestamp: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., run_created: _Optional[_Union[RunCreatedEvent, _Mapping]] = ..., step_started: _Optional[_Union[StepStartedEvent, _Mapping]] = ..., step_completed: _Optional[_Union[StepCompletedEvent, _Mapping]] = ..., step_ready: _Optional[_Union[StepReadyEvent, _Mapping]] = ..., item_completed: _Optional[_Union[ItemCompletedEvent, _Mapping]] = ..., run_completed: _Optional[_Union[RunCompletedEvent, _Mapping]] = ..., sub_run_created: _Optional[_Union[SubRunCreatedEvent, _Mapping]] = ..., steps_needed: _Optional[_Union[StepsNeededEvent, _Mapping]] = ...) -> None: ...

class RunCreatedEvent(_message.Message):
    __slots__ = ("run_id", "flow_id", "item_count")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    flow_id: str
    item_count: int
    def __init__(self, run_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., item_count: _Optional[int] = ...) -> None: ...

class StepStartedEvent(_message.Message):
    __slots__ = ("run_id", "item_index", "step_index", "step_id", "attempt")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    item_index: int
    step_index: int
    step_id: str
    attempt: int
    def __init__(self, run_id: _Optional[str] = ..., item_index: _Optional[int] = ..., step_index: _Optional[int] = ..., step_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class StepCompletedEvent(_message.Message):
    __slots__ = ("run_id", "item_index", "step_index", "step_id", "status", "result")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    item_index: int
    step_index: int
    step_id: str
    status: _common_pb2.ExecutionStatus
    result: _struct_pb2.Value
    def __init__(self, run_id: _Optional[str] = ..., item_index: _Optional[int] = ..., step_index: _Optional[int] = ..., step_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.ExecutionStatus, str]] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class StepReadyEvent(_message.Message):
    __slots__ = ("run_id", "item_index", "step_index", "step_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    item_index: int
    step_index: int
    step_id: str
    def __init__(self, run_id: _Optional[str] = ..., item_index: _Optional[int] = ..., step_index: _Optional[int] = ..., step_id: _Optional[str] = ...) -> None: ...

class ItemCompletedEvent(_message.Message):
    __slots__ = ("run_id", "item_index", "result")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    item_index: int
    result: _struct_pb2.Value
    def __init__(self, run_id: _Optional[str] = ..., item_index: _Optional[int] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class RunCompletedEvent(_message.Message):
    __slots__ = ("run_id", "status")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: _common_pb2.ExecutionStatus
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.ExecutionStatus, str]] = ...) -> None: ...

class SubRunCreatedEvent(_message.Message):
    __slots__ = ("run_id", "parent_run_id", "flow_id", "item_count")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    parent_run_id: str
    flow_id: str
    item_count: int
    def __init__(self, run_id: _Optional[str] = ..., parent_run_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., item_count: _Optional[int] = ...) -> None: ...

class StepsNeededEvent(_message.Message):
    __slots__ = ("run_id", "item_index", "step_ids")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_IDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    item_index: int
    step_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., item_index: _Optional[int] = ..., step_ids: _Optional[_Iterable[str]] = ...) -> None: ...
