"""The builtin components, in `list-components` order."""

from .base import Builtin, BuiltinError
from .basic import NOOP, SLEEP
from .blobs import GET_BLOB, PUT_BLOB
from .files import LOAD_FILE
from .messages import CREATE_MESSAGES
from .openai import OPENAI
from .subflows import EVAL, ITERATE, MAP, NestedFailure

BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        CREATE_MESSAGES,
        EVAL,
        GET_BLOB,
        ITERATE,
        LOAD_FILE,
        MAP,
        NOOP,
        OPENAI,
        PUT_BLOB,
        SLEEP,
    )
}

__all__ = ["BUILTINS", "Builtin", "BuiltinError", "NestedFailure"]
