"""Plain values over a pipe: the only thing a candidate program can hand to the judge.

The judge process (trusted) calls the candidate's function through a pipe; arguments and results
cross it as tagged JSON that decodes only into exact builtin types (None, bool, int, float,
complex, str, bytes, list, tuple, dict, set, frozenset). A candidate-made object never reaches
the judge, so its `__eq__`, `__hash__`, `__float__` or `__repr__` can never run there: whatever
the candidate sends is at most a claim about a plain value, which is what the function returning
that value would have claimed anyway.

Frames are a 4-byte big-endian length and a UTF-8 JSON body. Decoding is strict and bounded:
frame size, nesting depth and container sizes are capped, unknown tags and raw JSON numbers are
refused (ints and floats travel as hex strings: exact, unbounded ints, nan and inf included).

Stdlib only, and no imports of this package: the candidate side runs this file's text inside the
sandbox, the judge side loads it by path.
"""

import json
import os
import struct

MAX_FRAME = 32 << 20  # bytes in one message
MAX_DEPTH = 64  # nesting of containers
MAX_ITEMS = 1 << 20  # elements in one container


class WireError(Exception):
    """A frame or value that does not follow the protocol (the candidate's fault, never trusted)."""


# ------------------------------------------------------------------------------ values
def encode(value, _depth=0):
    """A JSON-able form of `value`; plain values only (subclasses are converted by value)."""
    if _depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if value is None or value is True or value is False:
        return value
    if isinstance(value, bool):  # a bool subclass cannot exist, but be exact
        return bool(value)
    if isinstance(value, int):
        return {"i": format(int.__index__(value), "x")}
    if isinstance(value, float):
        return {"f": float.hex(float.__float__(value))}
    if isinstance(value, complex):
        return {"c": [float.hex(complex.__complex__(value).real), float.hex(complex.__complex__(value).imag)]}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return {"b": bytes(value).hex()}
    d = _depth + 1
    if isinstance(value, list):
        return {"l": [encode(v, d) for v in list.__iter__(value)]}
    if isinstance(value, tuple):
        return {"t": [encode(v, d) for v in tuple.__iter__(value)]}
    if isinstance(value, dict):
        return {"d": [[encode(k, d), encode(v, d)] for k, v in dict.items(value)]}
    if isinstance(value, frozenset):
        return {"z": [encode(v, d) for v in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"s": [encode(v, d) for v in set.__iter__(value)]}
    raise WireError("cannot pass a %s by value" % type(value).__name__)


def decode(obj, _depth=0):
    """The plain value a JSON form stands for; anything unexpected raises WireError."""
    if _depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if obj is None or obj is True or obj is False:
        return obj
    if type(obj) is str:
        return obj
    if type(obj) is not dict or len(obj) != 1:
        raise WireError("malformed value")
    ((tag, body),) = obj.items()
    try:
        if tag == "i" and type(body) is str and len(body) <= 100_000:
            return int(body, 16)
        if tag == "f" and type(body) is str and len(body) <= 64:
            return float.fromhex(body)
        if tag == "c" and type(body) is list and len(body) == 2 and all(type(x) is str for x in body):
            return complex(float.fromhex(body[0]), float.fromhex(body[1]))
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
    except (ValueError, OverflowError) as e:
        raise WireError("malformed number: %s" % e) from None
    if type(body) is not list or len(body) > MAX_ITEMS:
        raise WireError("malformed value")
    d = _depth + 1
    if tag == "l":
        return [decode(v, d) for v in body]
    if tag == "t":
        return tuple(decode(v, d) for v in body)
    try:
        if tag == "s":
            return {decode(v, d) for v in body}
        if tag == "z":
            return frozenset(decode(v, d) for v in body)
        if tag == "d":
            if not all(type(kv) is list and len(kv) == 2 for kv in body):
                raise WireError("malformed dict")
            return {decode(k, d): decode(v, d) for k, v in body}
    except TypeError as e:  # an unhashable key or element
        raise WireError("malformed value: %s" % e) from None
    raise WireError("unknown tag")


# ------------------------------------------------------------------------------ frames
def dump_frame(message):
    body = json.dumps(message, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise WireError("message too large (%d bytes)" % len(body))
    return struct.pack(">I", len(body)) + body


def write_frame(fd, message):
    data = memoryview(dump_frame(message))
    while data:
        data = data[os.write(fd, data):]


def parse_frame(body):
    """A frame's JSON object; strict (no NaN literals, no duplicate-key games matter: last wins)."""
    def no_constants(name):
        raise WireError("bad JSON constant %s" % name)

    try:
        message = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except (ValueError, RecursionError) as e:
        raise WireError("malformed message: %s" % str(e)[:100]) from None
    if type(message) is not dict:
        raise WireError("malformed message")
    return message


class Closed(WireError):
    """The other end closed the pipe (the candidate's process ended)."""


class TimedOut(WireError):
    """No complete frame before the deadline."""


def _read_exact(fd, n, deadline, clock):
    import select

    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - clock()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimedOut("no answer in time")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise Closed("the other end closed the pipe")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd, deadline=None, clock=None):
    """The next message on `fd`; `deadline` is a `clock()` time (default time.monotonic)."""
    if clock is None:
        import time

        clock = time.monotonic
    (size,) = struct.unpack(">I", _read_exact(fd, 4, deadline, clock))
    if size > MAX_FRAME:
        raise WireError("message too large (%d bytes)" % size)
    return parse_frame(_read_exact(fd, size, deadline, clock))
