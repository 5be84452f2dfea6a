"""`put_blob` and `get_blob`: content-addressed JSON blobs (flows.md §8.1)."""

from __future__ import annotations

import json
from typing import Any

from ..blobs import BLOB_TYPES, is_blob_id
from ..plugins.base import StepCall
from .base import Builtin, BuiltinError, field_of, invalid_input, schema


async def _put_blob(call: StepCall) -> Any:
    if not isinstance(call.input, dict) or "data" not in call.input:
        raise invalid_input("missing required field 'data'")
    blob_type = field_of(call, "blob_type", "string")
    if blob_type not in BLOB_TYPES:
        raise invalid_input(f"field 'blob_type' must be one of {', '.join(BLOB_TYPES)}")
    return {"blob_id": await call.blobs.put_json(call.input["data"], blob_type)}


async def read_json_blob(call: StepCall, field: str) -> Any:
    """The JSON value of the blob named by input `field` (get_blob's blob_id, eval's flow_id)."""
    blob_id = field_of(call, field, "string")
    if not is_blob_id(blob_id):
        raise invalid_input(f"field '{field}' must be 64 lowercase hex characters: {blob_id}")
    blob = await call.blobs.get(blob_id)
    if blob is None:
        raise BuiltinError("COMPONENT_FAILED", f"Blob not found: {blob_id}")
    try:
        return blob.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BuiltinError("COMPONENT_FAILED", f"Blob {blob_id} does not hold JSON") from None


async def _get_blob(call: StepCall) -> Any:
    return {"data": await read_json_blob(call, "blob_id")}


BLOB_ID_SCHEMA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
PUT_BLOB = Builtin(
    "put_blob",
    "Stores JSON data as a content-addressed blob and returns its id.",
    _put_blob,
    schema(
        {"data": {}, "blob_type": {"type": "string", "enum": list(BLOB_TYPES)}},
        ["data", "blob_type"],
    ),
    schema({"blob_id": BLOB_ID_SCHEMA}, ["blob_id"]),
)
GET_BLOB = Builtin(
    "get_blob",
    "Reads the JSON data of a blob by id.",
    _get_blob,
    schema({"blob_id": BLOB_ID_SCHEMA}, ["blob_id"]),
    schema({"data": {}}, ["data"]),
)
