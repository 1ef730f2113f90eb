"""MQTT over QUIC the way msquic-, NanoSDK- and emqtt-based clients do it by default (EMQX's "single
stream" mode): CONNECT, then SUBSCRIBE, PUBLISH, acks and an EMQX-style `$file` upload all on the first
(control) stream, as over TCP — or, in `mixed` mode, a control stream and a data stream used side by
side. An independent QUIC stack (aioquic); packets are encoded by hand, so quicft's codec is not involved
on this side.

Usage:
  aioquic_single_stream.py single HOST PORT CA_FILE FILE  ; uploads FILE as file id "ss-file"
  aioquic_single_stream.py mixed HOST PORT CA_FILE
Prints one JSON line.
"""
import asyncio
import hashlib
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

from aioquic_mqtt import connect_v5, packet, read_packet, s

WAIT = 10


def props(raw=b""):
    # MQTT 5 properties: a variable-byte length, then the properties (none here).
    return bytes([len(raw)]) + raw


def publish(topic, payload, qos, pkid=0):
    body = s(topic) + (pkid.to_bytes(2, "big") if qos else b"") + props() + payload
    return packet(0x30 | (qos << 1), body)


def subscribe(filt, qos, pkid):
    return packet(0x82, pkid.to_bytes(2, "big") + props() + s(filt) + bytes([qos]))


def resp(kind, pkid):
    # PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70: packet id, reason 0 (short form)
    return packet(kind, pkid.to_bytes(2, "big"))


def parse_publish(first, body):
    qos = (first >> 1) & 3
    tlen = int.from_bytes(body[0:2], "big")
    topic = body[2 : 2 + tlen].decode()
    at = 2 + tlen
    pkid = 0
    if qos:
        pkid = int.from_bytes(body[at : at + 2], "big")
        at += 2
    plen, mult = 0, 1
    while True:  # property length
        b = body[at]
        at += 1
        plen += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return {"topic": topic, "qos": qos, "pkid": pkid, "payload": body[at + plen :]}


class Stream:
    """One QUIC stream speaking MQTT: answers deliveries (QoS 1 and 2 flows) as they come, records
    them, and hands every other packet to whoever waits for it."""

    def __init__(self, name, reader, writer):
        self.name, self.reader, self.writer = name, reader, writer
        self.delivered = []  # (topic, qos, payload) of every PUBLISH received here
        self.released = []  # packet ids of QoS 2 deliveries completed (PUBREL answered)

    def send(self, data):
        self.writer.write(data)

    async def expect(self, kind):
        """The next packet of type `kind` (4 bits) on this stream, handling deliveries meanwhile."""
        while True:
            first, body = await asyncio.wait_for(read_packet(self.reader), WAIT)
            t = first >> 4
            if t == 3:
                p = parse_publish(first, body)
                self.delivered.append((p["topic"], p["qos"], p["payload"].decode(errors="replace")))
                if p["qos"] == 1:
                    self.send(resp(0x40, p["pkid"]))
                elif p["qos"] == 2:
                    self.send(resp(0x50, p["pkid"]))
                if t == kind:
                    return first, body
                continue
            if t == 6:  # PUBREL of a QoS 2 delivery: complete it
                pkid = int.from_bytes(body[0:2], "big")
                self.send(resp(0x70, pkid))
                self.released.append(pkid)
                if kind == 6:
                    return first, body
                continue
            if t != kind:
                raise RuntimeError(f"{self.name}: expected packet type {kind}, got {t} {body!r}")
            return first, body

    async def until_delivered(self, topic):
        while not any(d[0] == topic for d in self.delivered):
            await self.expect(3)

    async def ack_code(self, kind, pkid):
        _, body = await self.expect(kind)
        got = int.from_bytes(body[0:2], "big")
        if got != pkid:
            raise RuntimeError(f"{self.name}: ack for {got}, expected {pkid}")
        return body[2] if len(body) > 2 else 0


def quic_config(ca):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["mqtt"], server_name="localhost")
    cfg.load_verify_locations(ca)
    cfg.verify_mode = ssl.CERT_REQUIRED
    return cfg


async def open_stream(proto, name):
    r, w = await proto.create_stream()
    return Stream(name, r, w)


async def hello(proto, client_id):
    ctl = await open_stream(proto, "control")
    ctl.send(connect_v5(client_id))
    _, body = await ctl.expect(2)
    return ctl, body[1]


async def single(host, port, ca, path):
    client_id = "aioquic-single"
    data = open(path, "rb").read()
    out = {}
    async with connect(host, port, configuration=quic_config(ca)) as proto:
        ctl, out["connack"] = await hello(proto, client_id)
        ctl.send(subscribe("single/#", 2, 1))
        _, body = await ctl.expect(9)
        out["suback"] = list(body[3:])
        ctl.send(subscribe("$file-response/" + client_id, 1, 2))
        _, body = await ctl.expect(9)
        out["suback_response"] = list(body[3:])
        ctl.send(packet(0xC0, b""))  # PINGREQ
        await ctl.expect(13)
        out["pingresp"] = True
        # QoS 0, 1 and 2 from the client; each comes back to us through our own subscription.
        ctl.send(publish("single/q0", b"zero", 0))
        ctl.send(publish("single/q1", b"one", 1, 10))
        out["puback"] = await ctl.ack_code(4, 10)
        ctl.send(publish("single/q2", b"two", 2, 11))
        out["pubrec"] = await ctl.ack_code(5, 11)
        ctl.send(resp(0x62, 11))
        out["pubcomp"] = await ctl.ack_code(7, 11)
        for t in ("single/q0", "single/q1", "single/q2"):
            await ctl.until_delivered(t)
        # The server's PUBREL for the QoS 2 delivery, answered by `expect`: wait for it.
        while not ctl.released:
            await ctl.expect(6)
        # An EMQX-style upload on the same stream: init, segments with their SHA-256, fin.
        fid, seg, pkid = "ss-file", 4096, 20
        meta = {"name": "single.bin", "size": len(data), "checksum": hashlib.sha256(data).hexdigest()}
        ctl.send(publish(f"$file/{fid}/init", json.dumps(meta).encode(), 1, pkid))
        out["init"] = await ctl.ack_code(4, pkid)
        out["segments"] = []
        for off in range(0, len(data), seg):
            chunk = data[off : off + seg]
            pkid += 1
            topic = f"$file/{fid}/{off}/{hashlib.sha256(chunk).hexdigest()}"
            ctl.send(publish(topic, chunk, 1, pkid))
            out["segments"].append(await ctl.ack_code(4, pkid))
        pkid += 1
        ctl.send(publish(f"$file/{fid}/fin/{len(data)}/{meta['checksum']}", b"", 1, pkid))
        out["fin"] = await ctl.ack_code(4, pkid)
        # Every command is also answered on the response topic: delivered on this stream too.
        rtopic = "$file-response/" + client_id
        want = 2 + len(out["segments"])
        while sum(1 for d in ctl.delivered if d[0] == rtopic) < want:
            await ctl.expect(3)
        out["responses"] = [json.loads(d[2])["reason_code"] for d in ctl.delivered if d[0] == rtopic]
        out["delivered"] = [[t, q, p] for (t, q, p) in ctl.delivered if not t.startswith("$")]
        ctl.send(b"\xe0\x00")  # DISCONNECT
        await asyncio.sleep(0.1)
    print(json.dumps(out))


async def mixed(host, port, ca):
    out = {}
    async with connect(host, port, configuration=quic_config(ca)) as proto:
        ctl, out["connack"] = await hello(proto, "aioquic-mixed")
        data = await open_stream(proto, "data")
        ctl.send(subscribe("mixed/ctl", 1, 1))
        _, body = await ctl.expect(9)
        data.send(subscribe("mixed/data", 1, 2))
        _, body2 = await data.expect(9)
        out["subacks"] = [list(body[3:]), list(body2[3:])]
        # Published on one stream, delivered on the one that subscribed.
        data.send(publish("mixed/ctl", b"via data", 1, 3))
        out["puback_data"] = await data.ack_code(4, 3)
        ctl.send(publish("mixed/data", b"via control", 1, 4))
        out["puback_ctl"] = await ctl.ack_code(4, 4)
        await ctl.until_delivered("mixed/ctl")
        await data.until_delivered("mixed/data")
        ctl.send(packet(0xC0, b""))
        await ctl.expect(13)
        out["pingresp"] = True
        out["on_control"] = [d[0] for d in ctl.delivered]
        out["on_data"] = [d[0] for d in data.delivered]
        ctl.send(b"\xe0\x00")
        await asyncio.sleep(0.1)
    print(json.dumps(out))


if __name__ == "__main__":
    mode, host, port, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if mode == "single":
        asyncio.run(single(host, port, ca, sys.argv[5]))
    else:
        asyncio.run(mixed(host, port, ca))
