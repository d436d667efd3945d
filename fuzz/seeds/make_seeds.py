#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into seeds/<target>/ (run from fuzz/).

Inputs come from SPEC.md section 21 (client commands, published messages), R-FRM/R-PUB edge
cases, and the isotime differential table of src/isotime.rs. Re-running it is idempotent.
"""
import json
import os
import re
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, items):
    d = os.path.join(HERE, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = item.encode("utf-8")
        with open(os.path.join(d, "%04d" % i), "wb") as f:
            f.write(item)


def deep(n, opener="[", closer="]", inner="1"):
    return opener * n + inner + closer * n


def deep_obj(n):
    return '{"k":' * n + "1" + "}" * n


# --- client frames (SPEC 21: T-2..T-40, R-FRM, R-PING, R-RPL) --------------------------------
commands = [
    "null", '"hello"', "{}", '{"event": null}', '{"event": 5}', "[1]", "", "{", "{'event': 'ping'}",
    '{"event": ""}', '{"event": "hello"}', '{"event": "pong"}', '{"event": "AUTH"}',
    '{"event": " ping"}', '{"event": "%s"}' % ("a" * 41), '{"event": "%s"}' % ("\u00e9" * 40),
    '{"event": "ping"}', '{"event": "ping", "data": 123}', '{"event": "ping", "data": "hello"}',
    '{"event": "ping", "data": "%s"}' % ("\U0001F600" * 130),
    '{"event": "auth", "method": "x"}', '{"event": "auth", "method": "ticket"}', '{"event": "auth"}',
    '{"event": "auth", "method": "ticket", "ticket": "valid_ticket"}',
    '{"event": "auth", "method": "ticket", "ticket": {"a": [1, 2.5, 1e400]}}',
    '{"event": "subscribe"}', '{"event": "subscribe", "subscription": "invalid"}',
    '{"event": "subscribe", "subscription": "invalid.topic"}',
    '{"event": "subscribe", "subscription": ".topic"}', '{"event": "subscribe", "subscription": "service."}',
    '{"event": "subscribe", "subscription": 0}', '{"event": "subscribe", "subscription": [1]}',
    '{"event": "subscribe", "subscription": "simple.topic"}',
    '{"event": "subscribe", "subscription": "simple.topic", "extra": "bar"}',
    '{"event": "subscribe", "subscription": "complex.topic", "extra": "hello", "other": "bar"}',
    '{"event": "subscribe", "subscription": "a.b.c", "status": "x", "data": {"x": 1}, "error": null}',
    '{"event": "message", "subscription": "simple.invalid"}',
    '{"event": "message", "subscription": "complex.topic", "data": {"foo": "bar"}, "extra": "irrelevant"}',
    '{"event": "message", "subscription": "complex.topic", "data": 123456789012345678901234567890}',
    '{"event": "unsubscribe", "subscription": "simple.topic"}',
    '{"event": "unsubscribe", "subscription": "simple.invalid", "extra": [true, false, null]}',
    '{"event": "ping", "event": "auth"}', '{"event": "p\\u0069ng"}', '{"event": "\\ud83d\\ude00"}',
    '{"event": "\\ud800"}', 'NaN', '{"event": "ping", "data": Infinity}', '\ufeff{"event": "ping"}',
    ' \t\n{"event": "ping"}\r\n', '{"event": "ping"} x', '{"event": "ping", "data": -0.0e-0}',
    '{"event": "subscribe", "subscription": "s.t", "data": %s}' % deep(500),
    '{"event": "ping", "data": %s}' % deep(998), deep(1000), deep(1001), deep_obj(999), deep_obj(1000),
    "x" + "[" * 1001, "[" * 1001,
]
binary = []
for c in ['{"event": "ping", "data": "h\u00e9llo"}', '{"event": "subscribe", "subscription": "simple.topic"}', "[]", "1"]:
    binary += [
        c.encode("utf-16-le"), c.encode("utf-16-be"), c.encode("utf-16"), c.encode("utf-32-le"),
        c.encode("utf-32-be"), c.encode("utf-32"), c.encode("utf-8-sig"),
    ]
binary += [b"\xff", b"\x00", b"1\x00", b"\x001", b"\xfe\xff\xd8\x00", b"\x00\x00\x00\x22\x00\x11\x00\x00",
           b"\xef\xbb\xbf\xef\xbb\xbf{}", '{"event": "\udfff"}'.encode("utf-16-le", "surrogatepass")]
write("client_frame", commands + binary)

# --- published messages (SPEC 21: T-18..T-25, T-38, T-42..T-46; R-PUB-3/5/8) ------------------
def m(**kw):
    return json.dumps(kw)

published = [
    m(subscription="simple.topic", data={"baz": "foo"}),
    m(subscription="simple.othertopic", data={"baz": "foo"}),
    "{", "", "[]", "null", m(subscription="simple.topic"), m(data=1), m(subscription=1, data=1),
    m(subscription="simple.topic", data=None, session_id=None),
    m(subscription="simple.topic", data="x", session_id="sess_123", extra="bar"),
    m(subscription="simple.topic", data=[1, 2.5, "x"], published_at="not-a-date"),
    m(subscription="simple.topic", data=1, published_at="2024-01-01T00:00:00Z"),
    m(subscription="simple.topic", data=1, published_at="20240101T120000+0530"),
    m(subscription="simple.topic", data=1, published_at=None),
    m(subscription="simple.topic", data=1, published_at=5),
    m(subscription="s.t", data={"msg": 1}, options={"order": 3}),
    m(subscription="s.t", data=1, options={"order": 1.2, "order_key": "other"}),
    m(subscription="s.t", data=1, options={"order": "invalid"}),
    m(subscription="s.t", data=1, options={"order": " 1_000 ", "order_key": [1]}),
    m(subscription="s.t", data=1, options={"order": "nan", "order_key": True}),
    m(subscription="s.t", data=1, options={"throttle": 0.2}),
    m(subscription="s.t", data=1, options={"throttle": 1, "throttle_key": "other"}),
    m(subscription="s.t", data=1, options={"throttle": "inf", "throttle_key": {"a": 1}}),
    m(subscription="s.t", data=1, options=None), m(subscription="s.t", data=1, options=5),
    m(subscription="s.t", data=1, options="x"), m(subscription="s.t", data=1, options=[1]),
    '{"subscription": "s.t", "data": 1e400, "options": {"order": 1e400, "order_key": 1.0}}',
    '{"subscription": "s.t", "data": 123456789012345678901234567890123, "extra": -0.0}',
    '{"subscription": "s.t", "data": "\\ud83d\\ude00\\u0000", "data": {"dup": true}}',
    '{"subscription": "s.t", "data": %s}' % deep(200),
    '{"subscription": "s.t", "data": %s}' % deep(998),
    '{"subscription": "s.t", "data": %s}' % deep_obj(998),
    '{"subscription": "s.t", "data": %s}' % deep(999),
    '{"subscription": "s.t", "queue_size": 1, "data": {"k": [{"k": [1]}]}}',
]
write("published_message", published)

# --- pyjson -------------------------------------------------------------------------------------
scalars = ["0", "-0", "0.0", "-0.0", "1", "1.0", "1e0", "10E-1", "true", "false", "null", '""', '"0"',
           "1e400", "-1e400", "1e-400", "1e30", "1000000000000000019884624838656",
           "9007199254740993", "9007199254740993.0", "0.1", "1" * 400, "-" + "9" * 320 + ".5",
           '" 1_000 "', '"\\u0661\\u0662"', '"inf"', '"-Infinity"', '"nAn"', '"1e"', '"._1"',
           '"\\u3000 2.5 \\u2029"', '"1__0"', '"\\u00a0"']
pyjson_seeds = scalars + [
    "[" + ", ".join(scalars) + "]",
    "{" + ", ".join('"k%d": %s' % (i, s) for i, s in enumerate(scalars)) + "}",
    '[[1, 2], [1.0, 2.0], [true, 2], {"a": [1]}, {"a": [1.0]}]',
    '{"a": 1, "b": 2}', '{"b": 2, "a": 1}', deep(1000), deep(1001), deep_obj(1000),
    "1.5e", "01", "+1", "- 1", ".5", "5.", "1e+", "1E-07", "2.5", " 7 ", "inf", "1_0",
]
write("pyjson", pyjson_seeds)

# --- isotime: the inputs of the Python 3.11 differential table in src/isotime.rs ----------------
src = open(os.path.join(HERE, "..", "..", "src", "isotime.rs"), encoding="utf-8").read()
table = src[src.index("const CASES"):]
cases = []
for line in table.splitlines():
    mt = re.match(r'\s*\("((?:[^"\\]|\\.)*)",', line)
    if mt:
        text = mt.group(1)
        text = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda g: chr(int(g.group(1), 16)), text)
        text = text.replace('\\"', '"').replace("\\\\", "\\").replace("\\t", "\t").replace("\\n", "\n")
        text = text.replace("\\0", "\0")
        cases.append(text)
cases = list(dict.fromkeys(cases))
write("isotime", cases)
print({t: len(os.listdir(os.path.join(HERE, t))) for t in ["client_frame", "published_message", "pyjson", "isotime"]})
