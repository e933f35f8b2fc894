"""Wire models of Dicts and Queues (wire layer): Modal's `modal.Dict` and `modal.Queue`.

Keys and values are cloudpickle bytes made by the SDK, here base64 text (`*_b64`) that the
server stores and returns but never unpickles; a Dict compares keys by those bytes (so use
primitive keys, as Modal advises). Both ends import this module; it imports pydantic and
the stdlib only.
"""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import Field, field_validator

from ._api import _Model

KV_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
PARTITION = r"^[A-Za-z0-9._:/=+-]*$"
MAX_DICT_KEY_BYTES = 64 << 10
MAX_DICT_VALUE_BYTES = 16 << 20
MAX_DICT_ENTRIES = 100_000
MAX_QUEUE_ITEM_BYTES = 1 << 20
MAX_PARTITION_ITEMS = 5_000       # Modal's bound per partition
MAX_QUEUE_PARTITIONS = 100_000
MAX_OBJECTS_PER_OWNER = 1_000     # named Dicts (and, apart, Queues) per principal
MAX_QUEUE_WAIT_S = 50.0           # one blocking get; the SDK loops for longer timeouts
KvKind = Literal["dict", "queue", "volume"]


def _b64(value: str, limit: int, what: str) -> str:
    if len(value) > (limit * 4) // 3 + 8:
        raise ValueError(f"{what} is larger than {limit} bytes pickled")
    try:
        base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{what} is not base64") from None
    return value


class KvLookup(_Model):
    name: str = Field(min_length=1, max_length=128, pattern=KV_NAME)
    create_if_missing: bool = False


class KvInfo(_Model):
    object_id: str
    kind: KvKind
    name: str | None = None
    created_at: float
    ephemeral: bool = False
    entries: int | None = None     # a Dict's entries / a Queue's items, in lists


class KvList(_Model):
    objects: list[KvInfo]


class DictKey(_Model):
    key_b64: str

    @field_validator("key_b64")
    @classmethod
    def _key(cls, v: str) -> str:
        return _b64(v, MAX_DICT_KEY_BYTES, "a Dict key")


class DictEntry(DictKey):
    value_b64: str

    @field_validator("value_b64")
    @classmethod
    def _value(cls, v: str) -> str:
        return _b64(v, MAX_DICT_VALUE_BYTES, "a Dict value")


class DictPut(_Model):
    entries: list[DictEntry] = Field(min_length=1, max_length=10_000)
    skip_if_exists: bool = False


class DictPutResult(_Model):
    created: bool


class DictValue(_Model):
    found: bool
    value_b64: str | None = None


class DictItem(_Model):
    key_b64: str | None = None
    value_b64: str | None = None


class DictEntries(_Model):
    """One page of a Dict's contents (`keys()`, `values()`, `items()`), in insertion order
    of first put; `next_cursor` continues it."""
    entries: list[DictItem]
    next_cursor: int | None = None


class Count(_Model):
    len: int


class QueuePut(_Model):
    values_b64: list[str] = Field(min_length=1, max_length=MAX_PARTITION_ITEMS)
    partition: str = Field("", max_length=64, pattern=PARTITION)

    @field_validator("values_b64")
    @classmethod
    def _values(cls, v: list[str]) -> list[str]:
        return [_b64(x, MAX_QUEUE_ITEM_BYTES, "a Queue item") for x in v]


class QueueGet(_Model):
    partition: str = Field("", max_length=64, pattern=PARTITION)
    n_values: int = Field(1, ge=1, le=MAX_PARTITION_ITEMS)
    timeout_s: float = Field(0.0, ge=0, le=MAX_QUEUE_WAIT_S)


class QueueValues(_Model):
    values_b64: list[str]


class QueueClear(_Model):
    partition: str = Field("", max_length=64, pattern=PARTITION)
    all: bool = False


class QueueNext(_Model):
    """`iterate()`: the items after `after_seq`, without removing them."""
    partition: str = Field("", max_length=64, pattern=PARTITION)
    after_seq: int = Field(0, ge=0)
    timeout_s: float = Field(0.0, ge=0, le=MAX_QUEUE_WAIT_S)


class QueueItems(_Model):
    items: list[tuple[int, str]]    # (seq, value_b64)
