from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PutBlobRequest(_message.Message):
    __slots__ = ("json_data", "raw_data", "blob_type", "filename", "content_type")
    JSON_DATA_FIELD_NUMBER: _ClassVar[int]
    RAW_DATA_FIELD_NUMBER: _ClassVar[int]
    BLOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    json_data: _struct_pb2.Value
    raw_data: bytes
    blob_type: str
    filename: str
    content_type: str
    def __init__(self, json_data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., raw_data: _Optional[bytes] = ..., blob_type: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class PutBlobResponse(_message.Message):
    __slots__ = ("blob_id", "filename")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    filename: str
    def __init__(self, blob_id: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...

class GetBlobRequest(_message.Message):
    __slots__ = ("blob_id",)
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    def __init__(self, blob_id: _Optional[str] = ...) -> None: ...

class GetBlobResponse(_message.Message):
    __slots__ = ("json_data", "raw_data", "blob_type", "blob_id", "filename", "content_type")
    JSON_DATA_FIELD_NUMBER: _ClassVar[int]
    RAW_DATA_FIELD_NUMBER: _ClassVar[int]
    BLOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    json_data: _struct_pb2.Value
    raw_data: bytes
    blob_type: str
    blob_id: str
    filename: str
    content_type: str
    def __init__(self, json_data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., raw_data: _Optional[bytes] = ..., blob_type: _Optional[str] = ..., blob_id: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...
