"""paho-mqtt reading quicft's $SYS/broker/... topics. Usage: paho_sys.py HOST PORT [read|acl]

read: subscribes to $SYS/broker/# (and, from a second client, to #), collects for a few seconds and
      prints one JSON line: the latest value per topic, whether the first arrived retained, how many
      times uptime was published, and what the # subscriber saw of $SYS.
acl:  prints the SUBACK code of a $SYS/# subscription.
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt

host, port = sys.argv[1], int(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else "read"


def client(cid):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    ready = threading.Event()
    c.on_connect = lambda *a: ready.set()
    c.connect(host, port, keepalive=30)
    c.loop_start()
    if not ready.wait(10):
        raise SystemExit(f"{cid}: no CONNACK")
    return c


if mode == "acl":
    c = client("sys-acl")
    codes = []
    done = threading.Event()
    c.on_subscribe = lambda cl, u, mid, rcs, p: (codes.extend(r.value for r in rcs), done.set())
    c.subscribe("$SYS/#", qos=0)
    done.wait(10)
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"codes": codes}))
    sys.exit(0)

latest, first_retained, uptimes, leaked = {}, {}, [], []
lock = threading.Lock()


def on_sys(cl, u, m):
    with lock:
        latest[m.topic] = m.payload.decode()
        first_retained.setdefault(m.topic, bool(m.retain))
        if m.topic == "$SYS/broker/uptime":
            uptimes.append(m.payload.decode())


everything = client("sys-all")
everything.on_message = lambda cl, u, m: leaked.append(m.topic) if m.topic.startswith("$") else None
everything.subscribe("#", qos=0)
reader = client("sys-reader")
reader.on_message = on_sys
reader.subscribe("$SYS/broker/#", qos=0)
time.sleep(3.5)
for c in (reader, everything):
    c.disconnect()
    c.loop_stop()
with lock:
    print(json.dumps({"latest": latest, "first_retained": first_retained, "uptimes": uptimes,
                      "leaked": leaked}))
