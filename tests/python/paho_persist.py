"""paho-mqtt (an independent MQTT 5 client) for the persistence tests (tests/tests/persistence.rs).

Every mode prints JSON on stdout for the Rust test to check:

  subscribe HOST PORT CLIENT_ID TOPIC   persistent session (clean start 0, expiry 3600 s), QoS 1
                                        subscription, then disconnect: {"session_present": …}
  publish HOST PORT TOPIC N [retain]    N QoS 1 messages "m0".."m{N-1}", waits for every PUBACK:
                                        {"acked": N}
  stream HOST PORT TOPIC N              publishes up to N QoS 1 messages, printing one line
                                        {"acked": i} per PUBACK as it arrives, until done or the
                                        connection breaks
  receive HOST PORT CLIENT_ID N SECS    resumes the persistent session, collects messages until N
                                        arrived or SECS passed: {"session_present": …, "messages": […]}
  retained HOST PORT TOPIC              a fresh client subscribes to TOPIC: {"messages": […]}
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes


def out(v):
    print(json.dumps(v), flush=True)


def connect(c, host, port, clean, expiry=None):
    props = None
    if expiry is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
    c.connect(host, port, keepalive=30, clean_start=clean, properties=props)


mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
args = sys.argv[4:]
connected = threading.Event()
state = {"session_present": None, "messages": [], "acked": 0}
lock = threading.Lock()


def on_connect(c, userdata, flags, reason_code, properties):
    state["session_present"] = bool(flags.session_present)
    connected.set()


def on_message(c, userdata, msg):
    with lock:
        state["messages"].append({"topic": msg.topic, "payload": msg.payload.decode(), "retain": msg.retain})


if mode == "subscribe":
    client_id, topic = args
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_connect = on_connect
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    connect(c, host, port, clean=False, expiry=3600)
    c.loop_start()
    assert connected.wait(10), "no CONNACK"
    c.subscribe(topic, qos=1)
    assert subscribed.wait(10), "no SUBACK"
    c.disconnect()
    c.loop_stop()
    out({"session_present": state["session_present"]})

elif mode in ("publish", "stream"):
    topic, n = args[0], int(args[1])
    retain = len(args) > 2 and args[2] == "retain"
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-pub-{time.time_ns()}", protocol=mqtt.MQTTv5)
    c.on_connect = on_connect
    broken = threading.Event()
    acked = threading.Semaphore(0)

    def on_publish(c, userdata, mid, reason_code, properties):
        with lock:
            state["acked"] += 1
            if mode == "stream":
                out({"acked": state["acked"]})
        acked.release()

    c.on_publish = on_publish
    c.on_disconnect = lambda *a: broken.set()
    connect(c, host, port, clean=True)
    c.loop_start()
    assert connected.wait(10), "no CONNACK"
    for i in range(n):
        if broken.is_set():
            break
        # paho queues beyond its in-flight window itself; publish() does not block.
        c.publish(topic, f"m{i}".encode(), qos=1, retain=retain)
        if mode == "stream":
            # One at a time, so that a PUBACK line means exactly messages 0..i were acknowledged.
            while not acked.acquire(timeout=0.1):
                if broken.is_set():
                    break
    deadline = time.time() + 20
    while state["acked"] < n and time.time() < deadline and not broken.is_set():
        time.sleep(0.02)
    if mode == "publish":
        c.disconnect()
    c.loop_stop()
    if mode == "publish":
        out({"acked": state["acked"]})

elif mode == "receive":
    client_id, n, secs = args[0], int(args[1]), float(args[2])
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_connect, c.on_message = on_connect, on_message
    connect(c, host, port, clean=False, expiry=3600)
    c.loop_start()
    assert connected.wait(10), "no CONNACK"
    deadline = time.time() + secs
    while time.time() < deadline:
        with lock:
            if len(state["messages"]) >= n:
                break
        time.sleep(0.05)
    time.sleep(0.3)  # duplicates, if any, would show up now
    c.disconnect()
    c.loop_stop()
    out({"session_present": state["session_present"], "messages": state["messages"]})

elif mode == "retained":
    (topic,) = args
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-ret-{time.time_ns()}", protocol=mqtt.MQTTv5)
    c.on_connect, c.on_message = on_connect, on_message
    connect(c, host, port, clean=True)
    c.loop_start()
    assert connected.wait(10), "no CONNACK"
    c.subscribe(topic, qos=1)
    deadline = time.time() + 5
    while time.time() < deadline and not state["messages"]:
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    out({"messages": state["messages"]})

else:
    sys.exit(f"unknown mode {mode}")
