"""pickle_property_test.py -- random plain data (hypothesis) pickled by Python, echoed by
examples/objects.lua speaking pickle in exact mode (OBJECTS_CODEC=pickle OBJECTS_EXACT=1), must
come back equal.

Values: None, bools, ints from -2^63 to 2^64-1, floats (-0.0, infinities and NaN compared by bit
pattern), str (non-BMP included), bytes, lists, tuples, dicts and sets/frozensets (keys and
members: str, int, bool, bytes and tuples of those; not None or NaN, which a Lua table cannot hold
as a key, nor floats, which Lua folds into integers when integral). Each request is pickled with a
protocol from 0 to 5 that can say it: bytes need 3 (before, Python writes them through GLOBAL),
sets and frozensets 4. Answers are protocol 4 (what our encoder writes); tuples come back as
tuples, frozensets as sets.

PICKLE_PROPERTY_CASES sets the number of cases (default 2000). Run from the repo root with
LUASOCK_BIN set; prints "N passed, N failed"; exit 0 = pass.
"""
import math
import os
import pickle
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from luasock_server import Server, require_hypothesis  # noqa: E402

require_hypothesis()  # Debian's python3-hypothesis (scripts/setup)
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

CASES = int(os.environ.get("PICKLE_PROPERTY_CASES", "2000"))

scalar_keys = (st.text() | st.integers(-2**63, 2**64 - 1) | st.booleans() | st.binary())
keys = scalar_keys | st.tuples(scalar_keys, scalar_keys) | st.tuples()
leaves = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
          | st.floats(allow_nan=True, allow_infinity=True) | st.text() | st.binary())
values = st.recursive(
    leaves,
    lambda inner: (st.lists(inner, max_size=6) | st.lists(inner, max_size=4).map(tuple)
                   | st.dictionaries(keys, inner, max_size=5)
                   | st.sets(keys, max_size=5) | st.frozensets(keys, max_size=5)),
    max_leaves=30)


def lowest_protocol(v):
    """The lowest protocol that writes v without GLOBAL."""
    if isinstance(v, (set, frozenset)):
        return 4
    if isinstance(v, bytes):
        return 3
    if isinstance(v, (list, tuple)):
        return max([lowest_protocol(x) for x in v], default=0)
    if isinstance(v, dict):
        return max([max(lowest_protocol(k), lowest_protocol(x)) for k, x in v.items()], default=0)
    return 0


def same(want, got, bits):
    """Equality that tells types apart (frozenset comes back a set), floats by bit pattern
    (bits=False: NaN as NaN, for protocol 0's text floats)."""
    if isinstance(want, frozenset):
        want = set(want)
    if type(want) is not type(got):
        return False
    if isinstance(want, float):
        if math.isnan(want) and not bits:
            return math.isnan(got)
        return struct.pack("<d", want) == struct.pack("<d", got)
    if isinstance(want, (list, tuple)):
        return len(want) == len(got) and all(same(w, g, bits) for w, g in zip(want, got))
    if isinstance(want, dict):
        return want.keys() == got.keys() and all(same(want[k], got[k], bits) for k in want)
    return want == got


class Echo:
    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def __call__(self, value, protocol):
        request = {"op": "echo", "args": [value]}
        self.sock.sendall(pickle.dumps(request, protocol=protocol))
        answer = pickle.load(self.reader)
        if not (isinstance(answer, dict) and answer.get("ok") is True):
            raise AssertionError(f"answer {answer!r}")
        return same(value, answer["result"], protocol > 0)


def main():
    os.environ["OBJECTS_CODEC"] = "pickle"
    os.environ["OBJECTS_EXACT"] = "1"
    server = Server("examples/objects.lua")
    echo = Echo(server)
    counts = {"passed": 0}

    @settings(max_examples=CASES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(value=values, data=st.data())
    def round_trip(value, data):
        protocol = data.draw(st.integers(lowest_protocol(value), 5), label="protocol")
        assert echo(value, protocol), f"protocol {protocol}: {value!r} came back different"
        counts["passed"] += 1

    start = time.monotonic()
    failed = 0
    try:
        round_trip()
    except Exception as e:  # noqa: BLE001 -- a wrong answer, or the server closing on a value
        print(f"FAIL: {type(e).__name__}: {e}")
        failed = 1
    finally:
        elapsed = time.monotonic() - start
        try:
            server.stop()
        finally:
            server.close()
    print(f"{counts['passed']} cases in {elapsed:.1f} s")
    print(f"{counts['passed']} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
