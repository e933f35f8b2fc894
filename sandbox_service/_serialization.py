"""Pickling of function arguments, results and exceptions (public layer).

cloudpickle, between the SDK and the function runner only: the server stores and forwards
these bytes and never unpickles them. A function defined in `__main__` or with
`serialized=True` travels by value; everything else by reference (its module must import
in the container).
"""

from __future__ import annotations

import pickle
from typing import Any

from .wire import errors as E

MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # as wire.MAX_PAYLOAD_BYTES (checked by a test)


def dumps(obj: Any) -> bytes:
    import cloudpickle

    try:
        data = cloudpickle.dumps(obj)
    except Exception as e:
        raise E.SerializationError(
            f"could not pickle {type(obj).__name__}: {type(e).__name__}: {e}. Arguments and "
            "results travel with cloudpickle: pass plain data (or a path, a Volume)") from None
    if len(data) > MAX_PAYLOAD_BYTES:
        raise E.PayloadTooLargeError(
            f"{type(obj).__name__} is {len(data)} bytes pickled; the limit is "
            f"{MAX_PAYLOAD_BYTES}: pass a Volume or a path instead")
    return data


def loads(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except Exception as e:
        raise E.DeserializationError(
            f"could not unpickle a result: {type(e).__name__}: {e}. The function's "
            "module or a library it returns objects of may be missing here") from None


def dump_exception(exc: BaseException) -> bytes:
    """The exception pickled, or b"" when it cannot be (then only its text travels)."""
    import cloudpickle

    try:
        data = cloudpickle.dumps(exc)
        pickle.loads(data)  # an exception whose __init__ takes other args fails here
        return data
    except Exception:
        return b""
