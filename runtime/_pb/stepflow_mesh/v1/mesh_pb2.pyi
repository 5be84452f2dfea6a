from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ForwardTaskRequest(_message.Message):
    __slots__ = ("queue_name", "assignment", "from_node_id", "root_run_id", "traceparent")
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROOT_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    queue_name: str
    assignment: bytes
    from_node_id: str
    root_run_id: str
    traceparent: str
    def __init__(self, queue_name: _Optional[str] = ..., assignment: _Optional[bytes] = ..., from_node_id: _Optional[str] = ..., root_run_id: _Optional[str] = ..., traceparent: _Optional[str] = ...) -> None: ...

class ForwardTaskResponse(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: bool = ..., reason: _Optional[str] = ...) -> None: ...
