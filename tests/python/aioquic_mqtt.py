"""An independent QUIC stack (aioquic) speaking MQTT to quicft: CONNECT on the control stream (the
first client-opened bidirectional stream), PUBLISH QoS 1 on a data stream, PUBACK read back on that
data stream. Packets are encoded by hand here, so the Rust codec is not involved on this side.

Usage: aioquic_mqtt.py HOST PORT CA_FILE TOPIC PAYLOAD ; prints one JSON line.
The packet helpers are shared with aioquic_single_stream.py.
"""
import asyncio
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(text):
    b = text.encode()
    return len(b).to_bytes(2, "big") + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect_v5(client_id):
    # protocol name, level 5, flags: clean start, keepalive 30, no properties
    return packet(0x10, s("MQTT") + bytes([5, 0x02]) + (30).to_bytes(2, "big") + b"\x00" + s(client_id))


def publish_qos1(topic, payload, pkid):
    return packet(0x32, s(topic) + pkid.to_bytes(2, "big") + b"\x00" + payload)


async def read_packet(reader):
    first = (await reader.readexactly(1))[0]
    mult, length = 1, 0
    while True:
        b = (await reader.readexactly(1))[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return first, await reader.readexactly(length)


async def main():
    host, port, ca, topic, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["mqtt"], server_name="localhost")
    cfg.load_verify_locations(ca)
    cfg.verify_mode = ssl.CERT_REQUIRED
    result = {}
    async with connect(host, port, configuration=cfg) as proto:
        ctl_r, ctl_w = await proto.create_stream()
        ctl_w.write(connect_v5("aioquic-interop"))
        first, body = await asyncio.wait_for(read_packet(ctl_r), 10)
        result["connack_type"] = first >> 4
        result["connack_code"] = body[1]
        data_r, data_w = await proto.create_stream()
        data_w.write(publish_qos1(topic, payload.encode(), 7))
        first, body = await asyncio.wait_for(read_packet(data_r), 10)
        result["ack_type"] = first >> 4
        result["ack_pkid"] = int.from_bytes(body[0:2], "big")
        result["ack_code"] = body[2] if len(body) > 2 else 0
        ctl_w.write(b"\xe0\x00")  # DISCONNECT, v5 short form
        await asyncio.sleep(0.1)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
