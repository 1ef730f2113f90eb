"""A device written against AWS IoT's published MQTT-based file delivery protocol (AWS IoT developer
guide, "MQTT-based file delivery": DescribeStream / GetStream, JSON and CBOR), with paho-mqtt
and cbor2 — nothing of quicft's own code.

It subscribes to its own `description`, `data` and `rejected` topics, describes the stream, fetches
the file by offset + count in JSON (base64 payloads) and in CBOR (raw bytes), fetches blocks with
a bitmap (hex string in JSON, bytes in CBOR), checks AWS's 128 KiB per request limit, provokes each
error code, and checks that another thing's topics are refused. Reassembles the file and prints
one JSON line with what it saw; exits 1 with a message on the first broken expectation.

Usage: paho_aws_stream.py HOST PORT CLIENT_ID STREAM_ID NOT_MINE_STREAM_ID
"""
import base64
import hashlib
import json
import queue
import sys

import cbor2
import paho.mqtt.client as mqtt

host, port, thing, stream, not_mine = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
inbox = queue.Queue()
acks = {}
subacks = {}


def fail(msg):
    print(json.dumps({"error": msg}))
    sys.exit(1)


def on_message(client, userdata, msg):
    inbox.put((msg.topic, msg.payload))


def on_publish(client, userdata, mid, reason_code, properties):
    acks[mid] = reason_code.value


def on_subscribe(client, userdata, mid, reason_codes, properties):
    subacks[mid] = [r.value for r in reason_codes]


c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=thing, protocol=mqtt.MQTTv5)
c.on_message = on_message
c.on_publish = on_publish
c.on_subscribe = on_subscribe
c.max_inflight_messages_set(64)
c.connect(host, port, keepalive=30)
c.loop_start()


def topic(sid, action, fmt):
    return f"$aws/things/{thing}/streams/{sid}/{action}/{fmt}"


def wait(pred, what, timeout=15):
    import time
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.01)
    fail(f"timed out waiting for {what}")


def subscribe(t):
    res, mid = c.subscribe(t, qos=1)
    wait(lambda: mid in subacks, f"SUBACK for {t}")
    return subacks[mid][0]


for sid in (stream, not_mine, "0000000000000000"):
    for fmt in ("json", "cbor"):
        for action in ("description", "data", "rejected"):
            code = subscribe(topic(sid, action, fmt))
            if code != 1:
                fail(f"subscribe {topic(sid, action, fmt)}: reason {code}")


def encode(fmt, req):
    return json.dumps(req).encode() if fmt == "json" else cbor2.dumps(req)


def decode(fmt, payload):
    return json.loads(payload) if fmt == "json" else cbor2.loads(payload)


def request(sid, action, fmt, payload, expect):
    """Publishes one request and collects `expect` answers (any kind) for it."""
    info = c.publish(topic(sid, action, fmt), payload, qos=1)
    info.wait_for_publish(10)
    out = []
    for _ in range(expect):
        try:
            t, p = inbox.get(timeout=15)
        except queue.Empty:
            fail(f"{action}/{fmt} on {sid}: got {len(out)} answers, expected {expect}")
        kind = t.split("/")[-2]
        out.append((kind, decode(t.split("/")[-1], p)))
    return out


def no_more(what, wait_s=0.5):
    try:
        t, p = inbox.get(timeout=wait_s)
        fail(f"unexpected message after {what}: {t} {p[:100]!r}")
    except queue.Empty:
        pass


def block_bytes(fmt, msg):
    return base64.b64decode(msg["p"]) if fmt == "json" else msg["p"]


seen = {}
# DescribeStream, JSON and CBOR.
for fmt in ("json", "cbor"):
    [(kind, d)] = request(stream, "describe", fmt, encode(fmt, {"c": f"desc-{fmt}"}), 1)
    if kind != "description" or d.get("c") != f"desc-{fmt}" or d.get("s") != 1:
        fail(f"describe {fmt}: {kind} {d}")
    files = d["r"]
    if len(files) != 1 or files[0]["f"] != 0:
        fail(f"describe {fmt}: files {files}")
    size = files[0]["z"]
    seen[f"describe_{fmt}"] = d

# GetStream by offset + count: first half in JSON, the rest in CBOR; one request outstanding.
BLOCK = 4096
nblocks = (size + BLOCK - 1) // BLOCK
blocks = {}
o = 0
while o < nblocks:
    fmt = "json" if o < nblocks // 2 else "cbor"
    n = min(8, nblocks - o)
    got = request(stream, "get", fmt, encode(fmt, {"c": "g", "s": 1, "f": 0, "l": BLOCK, "o": o, "n": n}), n)
    for kind, m in got:
        if kind != "data" or m["f"] != 0 or m.get("c") != "g":
            fail(f"get {fmt} o={o}: {kind} {m}")
        data = block_bytes(fmt, m)
        if len(data) != m["l"]:
            fail(f"block {m['i']}: l={m['l']} but {len(data)} bytes")
        blocks[m["i"]] = data
    o += n
if sorted(blocks) != list(range(nblocks)):
    fail(f"blocks missing: {set(range(nblocks)) - set(blocks)}")
whole = b"".join(blocks[i] for i in range(nblocks))
seen["size"] = len(whole)
seen["sha256"] = hashlib.sha256(whole).hexdigest()

# AWS's 128 KiB per request: 100 blocks of 4 KiB asked, 32 sent.
got = request(stream, "get", "json", encode("json", {"f": 0, "l": BLOCK, "o": 0, "n": 100}), 32)
no_more("a 128 KiB answer")
seen["limit_blocks"] = sorted(m["i"] for _, m in got)
for _, m in got:
    if base64.b64decode(m["p"]) != blocks[m["i"]]:
        fail(f"block {m['i']} differs between requests")

# Bitmaps: blocks 1, 2 and 5 after offset 3 (bits 1, 2, 5 of the first byte: 0x26) → 4, 5, 8.
want = [4, 5, 8]
for fmt, b in (("json", "0x26"), ("cbor", bytes([0x26]))):
    got = request(stream, "get", fmt, encode(fmt, {"c": "bm", "f": 0, "l": BLOCK, "o": 3, "b": b}), 3)
    ids = sorted(m["i"] for _, m in got)
    if ids != want or any(block_bytes(fmt, m) != blocks[m["i"]] for _, m in got):
        fail(f"bitmap {fmt}: blocks {ids}, expected {want}")
    seen[f"bitmap_{fmt}"] = ids
no_more("bitmap requests")


# Errors: each answered on `rejected` with AWS's code.
def expect_error(name, sid, fmt, payload, code, token=None):
    [(kind, m)] = request(sid, "get" if name != "describe" else "describe", fmt, payload, 1)
    if kind != "rejected" or m.get("o") != code:
        fail(f"{name}: expected rejected {code}, got {kind} {m}")
    if token is not None and m.get("c") != token:
        fail(f"{name}: client token {m.get('c')!r}, expected {token!r}")
    seen.setdefault("errors", {})[name] = m["o"]


expect_error("block_size_small", stream, "json", encode("json", {"c": "e1", "f": 0, "l": 255}), "BlockSizeOutOfBounds", "e1")
expect_error("block_size_large", stream, "cbor", encode("cbor", {"c": "e2", "f": 0, "l": 131073}), "BlockSizeOutOfBounds", "e2")
expect_error("offset", stream, "json", encode("json", {"f": 0, "l": BLOCK, "o": nblocks}), "OffsetOutOfBounds")
expect_error("bitmap_past_end", stream, "json", encode("json", {"f": 0, "l": BLOCK, "o": nblocks - 1, "b": "0x02"}), "OffsetOutOfBounds")
expect_error("version", stream, "json", encode("json", {"c": "v", "s": 2, "f": 0, "l": BLOCK}), "VersionMismatch", "v")
expect_error("file_id", stream, "cbor", encode("cbor", {"f": 1, "l": BLOCK}), "ResourceNotFound")
expect_error("unknown_stream", "0000000000000000", "json", encode("json", {"f": 0, "l": BLOCK}), "ResourceNotFound")
expect_error("not_mine", not_mine, "json", encode("json", {"f": 0, "l": BLOCK}), "Unauthorized")
expect_error("describe", not_mine, "cbor", encode("cbor", {"c": "d"}), "Unauthorized", "d")
expect_error("token_too_long", stream, "json", encode("json", {"c": "x" * 65, "f": 0, "l": BLOCK}), "InvalidRequest")
expect_error("missing_block_size", stream, "json", encode("json", {"f": 0}), "InvalidRequest")
expect_error("bad_bitmap", stream, "json", encode("json", {"f": 0, "l": BLOCK, "b": "0xzz"}), "InvalidRequest")
expect_error("big_bitmap", stream, "cbor", encode("cbor", {"f": 0, "l": 256, "b": b"\x01" * 12288}), "BlockBitmapLimitExceeded")
expect_error("count", stream, "json", encode("json", {"f": 0, "l": BLOCK, "n": 98305}), "BlockCountLimitExceeded")
expect_error("json", stream, "json", b"{not json", "InvalidJson")
expect_error("cbor", stream, "cbor", b"\xff\xff", "InvalidCbor")

# Another thing's topics: no subscription, no answer.
res, mid = c.subscribe(f"$aws/things/other-thing/streams/{stream}/data/json", qos=1)
wait(lambda: mid in subacks, "SUBACK")
seen["other_subscribe"] = subacks[mid][0]
info = c.publish(f"$aws/things/other-thing/streams/{stream}/get/json", encode("json", {"f": 0, "l": BLOCK}), qos=1)
info.wait_for_publish(10)
wait(lambda: info.mid in acks, "PUBACK")
seen["other_publish"] = acks[info.mid]
# A device may not publish the server's answers either.
info = c.publish(topic(stream, "data", "json"), b"{}", qos=1)
info.wait_for_publish(10)
wait(lambda: info.mid in acks, "PUBACK")
seen["forged_data"] = acks[info.mid]
no_more("refused publishes")

c.disconnect()
c.loop_stop()
print(json.dumps(seen))
