"""JSON for the agent's wire, straight from the interpreter's C accelerator (`_json`).

`import json` pulls in `re` (and with it enum, functools, collections: ~33 ms of the
agent's ~61 ms of imports in a warm sandbox, measured with -X importtime; more in a fresh
one, where every module is a first open). The agent only needs compact dumps and strict
loads of small messages, which `_json` does alone. If this interpreter's `_json` is missing
or behaves unlike the one this was written against (checked once, below), the real `json`
module is used instead.

Part of the in-sandbox agent (runtimes layer, runs INSIDE gVisor as PID 1). Stdlib only,
Python 3.9+; must not import anything outside this package.
"""

_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_WS = " \t\n\r"


class _Context:
    """The attributes `_json.make_scanner` reads from a JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo = None


def _default(o):
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


def _fast_loads(s):
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("utf-8")
    start = len(s) - len(s.lstrip(_WS))
    try:  # a scanner per call: it keeps a memo between calls, and threads share this
        obj, end = _json.make_scanner(_Context())(s, start)
    except StopIteration as e:
        raise ValueError("invalid JSON at char %s" % (e.value,)) from None
    if s[end:].strip(_WS):
        raise ValueError("extra data after JSON at char %d" % end)
    return obj


def _fast_dumps(obj):
    if isinstance(obj, str):
        return _json.encode_basestring_ascii(obj)
    chunks = _json.make_encoder({}, _default, _json.encode_basestring_ascii, None, ":", ",",
                                False, False, True)(obj, 0)
    return "".join(chunks)


def _check():
    """True when the fast path gives exactly what `json` would for the wire's shapes."""
    sample = {"op": "exec", "argv": ["echo", "h\u00e9\n\"x\""], "env": {"A": "1"}, "n": -3,
              "f": 1.5, "t": True, "u": None, "l": [[], {}]}
    text = ('{"op":"exec","argv":["echo","h\\u00e9\\n\\"x\\""],"env":{"A":"1"},"n":-3,'
            '"f":1.5,"t":true,"u":null,"l":[[],{}]}')
    return _fast_dumps(sample) == text and _fast_loads(" " + text + "\n") == sample


try:
    import _json

    _ok = _check()
except Exception:  # an interpreter without `_json`, or a different signature
    _ok = False

if _ok:
    loads, dumps = _fast_loads, _fast_dumps
else:  # pragma: no cover - depends on the image's interpreter
    import json as _stdlib_json

    def loads(s):
        return _stdlib_json.loads(s)

    def dumps(obj):
        return _stdlib_json.dumps(obj, separators=(",", ":"))
