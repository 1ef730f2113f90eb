"""A paho-mqtt (MQTT 5, TCP) client with a will that has a Will Delay Interval: connects, prints one JSON
line once the CONNACK is in, then stays connected until it is killed (the test kills it, so the server
sees the connection break without DISCONNECT, as with a device that loses power).

Usage: paho_will.py HOST PORT CLIENT_ID WILL_TOPIC WILL_DELAY_S SESSION_EXPIRY_S
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, client_id, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
delay, expiry = int(sys.argv[5]), int(sys.argv[6])

connected = threading.Event()
result = {}


def on_connect(client, userdata, flags, reason_code, properties):
    result["connack"] = reason_code.value
    connected.set()


c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
c.on_connect = on_connect
will_props = Properties(PacketTypes.WILLMESSAGE)
will_props.WillDelayInterval = delay
c.will_set(topic, b"gone " + client_id.encode(), qos=1, properties=will_props)
connect_props = Properties(PacketTypes.CONNECT)
connect_props.SessionExpiryInterval = expiry
c.connect(host, port, keepalive=30, properties=connect_props)
c.loop_start()
if not connected.wait(10):
    result["error"] = "no CONNACK"
print(json.dumps(result), flush=True)
threading.Event().wait()  # until killed
