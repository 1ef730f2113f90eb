"""paho-mqtt (an independent MQTT 5 client) against quicft's shared subscriptions (MQTT 5 §4.8.2).

Usage: paho_shared.py HOST PORT [all|acl]. Prints one JSON line with what it saw, for the Rust test
(tests/tests/shared_subscriptions.rs) to check:
  all: CONNACK's Shared Subscription Available, messages split between two members with each
       delivered once, no retained message on a shared subscribe, messages a member received and
       never acknowledged redelivered to the others when it leaves, SUBACK codes of malformed share
       names, and the DISCONNECT a shared subscription with No Local gets.
  acl: SUBACK codes for shared subscriptions whose inner filter the ACL allows / does not allow.
"""
import json
import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

host, port = sys.argv[1], int(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else "all"
GROUP = "$share/workers/jobs/#"


def client(cid, **kw):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, **kw)
    st = {"connack": threading.Event(), "subacks": queue.Queue(), "msgs": [], "disc": queue.Queue(),
          "lock": threading.Lock()}

    def on_connect(cl, u, flags, rc, props):
        st["props"] = props
        st["connack"].set()

    def on_message(cl, u, m):
        with st["lock"]:
            st["msgs"].append({"topic": m.topic, "payload": m.payload.decode(), "qos": m.qos,
                               "retain": bool(m.retain)})

    c.on_connect = on_connect
    c.on_subscribe = lambda cl, u, mid, rcs, p: st["subacks"].put([r.value for r in rcs])
    c.on_message = on_message
    c.on_disconnect = lambda cl, u, f, rc, p: st["disc"].put(rc.value)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    if not st["connack"].wait(10):
        raise SystemExit(f"{cid}: no CONNACK")
    c.st = st
    return c


def sub(c, topics):
    c.subscribe(topics)
    return c.st["subacks"].get(timeout=10)


def payloads(*cs):
    out = []
    for c in cs:
        with c.st["lock"]:
            out += [m["payload"] for m in c.st["msgs"]]
    return out


def wait_until(cond, timeout):
    end = time.time() + timeout
    while time.time() < end and not cond():
        time.sleep(0.05)
    return cond()


def publish_all(pub, prefix, n):
    for i in range(n):
        pub.publish("jobs/x", f"{prefix}{i}".encode(), qos=1).wait_for_publish(10)
    return [f"{prefix}{i}" for i in range(n)]


out = {}
if mode == "acl":
    c = client("acl-dev")
    out["codes"] = sub(c, [("$share/g/public/#", 1), ("$share/g/private/#", 1), ("public/+", 1)])
    c.disconnect()
    c.loop_stop()
    print(json.dumps(out))
    sys.exit(0)

pub = client("shared-pub")
pub.publish("jobs/r", b"retained", qos=1, retain=True).wait_for_publish(10)
a, b = client("shared-a"), client("shared-b")
out["shared_available"] = getattr(a.st["props"], "SharedSubscriptionAvailable", None)
out["suback"] = sub(a, [(GROUP, SubscribeOptions(qos=1))]) + sub(b, [(GROUP, SubscribeOptions(qos=1))])

# Each message to exactly one member.
sent = publish_all(pub, "m", 20)
wait_until(lambda: len(payloads(a, b)) >= len(sent), 10)
time.sleep(0.5)  # room for a duplicate or a retained message to show up
out["split"] = [len(payloads(a)), len(payloads(b))]
out["each_once"] = sorted(payloads(a, b)) == sorted(sent)
out["retained_seen"] = "retained" in payloads(a, b)

# A member that takes messages and never acknowledges them, then leaves: the others get them.
lazy = client("shared-lazy", manual_ack=True)
out["suback"] += sub(lazy, [(GROUP, SubscribeOptions(qos=1))])
sent = publish_all(pub, "r", 30)
wait_until(lambda: len([p for p in payloads(a, b, lazy) if p.startswith("r")]) >= len(sent), 10)
out["lazy_got"] = len(payloads(lazy))
lazy.disconnect()
lazy.loop_stop()
wait_until(lambda: set(sent) <= set(payloads(a, b)), 10)
out["redelivered_all"] = set(sent) <= set(payloads(a, b))

# Malformed share names: Topic Filter invalid (0x8F). (paho itself refuses to send a group with a
# wildcard; tests/tests/shared_subscriptions.rs sends those raw.)
out["malformed"] = sub(a, [("$share//x", 1), ("$share/g", 1), ("$share/g/", 1)])
# Unsubscribe with the full filter.
a.unsubscribe(GROUP)
time.sleep(0.3)
before = len(payloads(a))
sent = publish_all(pub, "u", 6)
wait_until(lambda: set(sent) <= set(payloads(b)), 10)
out["after_unsubscribe"] = [len(payloads(a)) - before, len([p for p in payloads(b) if p.startswith("u")])]

# No Local on a shared subscription is a protocol error (MQTT 5 §3.8.3.1).
nl = client("shared-nolocal")
nl.subscribe([("$share/g/x", SubscribeOptions(qos=1, noLocal=True))])
try:
    out["nolocal_disconnect"] = nl.st["disc"].get(timeout=10)
except queue.Empty:
    out["nolocal_disconnect"] = None
nl.loop_stop()
for c in (a, b, pub):
    c.disconnect()
    c.loop_stop()
print(json.dumps(out))
