"""paho-mqtt (an independent MQTT 5 client) against quicft over TCP.

Subscribes, publishes at QoS 0/1/2, and prints one JSON line with what it saw, for the Rust test
(tests/tests/interop.rs, tests/tests/websocket.rs) to check.
Usage: paho_pubsub.py HOST PORT [tcp|websockets]   (websockets: MQTT over WebSocket at /mqtt)
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

host, port = sys.argv[1], int(sys.argv[2])
transport = sys.argv[3] if len(sys.argv) > 3 else "tcp"
got = []
done = threading.Event()
acks = {}
connack = {}


def on_connect(client, userdata, flags, reason_code, properties):
    connack["rc"] = reason_code.value
    client.subscribe("paho/#", qos=2)


def on_subscribe(client, userdata, mid, reason_codes, properties):
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("origin", "paho")
    for qos in (0, 1, 2):
        client.publish(f"paho/q{qos}", f"hello {qos}".encode(), qos=qos, properties=props)


def on_publish(client, userdata, mid, reason_code, properties):
    acks[mid] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)


def on_message(client, userdata, msg):
    user = dict(msg.properties.UserProperty) if hasattr(msg.properties, "UserProperty") else {}
    got.append({"topic": msg.topic, "payload": msg.payload.decode(), "qos": msg.qos, "user": user})
    if len(got) == 3:
        done.set()


c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-interop", protocol=mqtt.MQTTv5,
                transport=transport)
if transport == "websockets":
    c.ws_set_options(path="/mqtt")
c.on_connect, c.on_subscribe, c.on_publish, c.on_message = on_connect, on_subscribe, on_publish, on_message
c.connect(host, port, keepalive=30)
c.loop_start()
ok = done.wait(15)
c.disconnect()
c.loop_stop()
print(json.dumps({"ok": ok, "connack": connack.get("rc"), "acks": sorted(acks.values()), "messages": sorted(got, key=lambda m: m["topic"])}))
