"""An EMQX-style file upload with paho-mqtt over MQTT 5 TCP, as devices written for EMQX do it:
init, segments with their SHA-256, fin with size and SHA-256 — reading the PUBACK reason codes.

Also sends one corrupt segment (its checksum does not match) and expects 0x80 for it.
Usage: paho_upload.py HOST PORT FILE ; prints one JSON line.
"""
import hashlib
import json
import sys
import threading

import paho.mqtt.client as mqtt

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, "rb").read()
SEG = 16 * 1024
codes = {}
pending = {}
lock = threading.Condition()


def on_publish(client, userdata, mid, reason_code, properties):
    with lock:
        codes[pending.pop(mid, mid)] = reason_code.value
        lock.notify_all()


c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-uploader", protocol=mqtt.MQTTv5)
c.on_publish = on_publish
c.connect(host, port, keepalive=30)
c.loop_start()


def send(label, topic, payload):
    with lock:
        info = c.publish(topic, payload, qos=1)
        pending[info.mid] = label


file_id = "paho-file"
send("init", f"$file/{file_id}/init", json.dumps({"name": "paho.bin", "size": len(data)}))
for off in range(0, len(data), SEG):
    seg = data[off:off + SEG]
    send(f"seg-{off}", f"$file/{file_id}/{off}/{hashlib.sha256(seg).hexdigest()}", seg)
send("corrupt", f"$file/{file_id}/0/{hashlib.sha256(b'not this').hexdigest()}", data[:SEG])
with lock:
    lock.wait_for(lambda: not pending, timeout=30)
send("fin", f"$file/{file_id}/fin/{len(data)}/{hashlib.sha256(data).hexdigest()}", b"")
with lock:
    lock.wait_for(lambda: "fin" in codes, timeout=30)
c.disconnect()
c.loop_stop()
segs = [v for k, v in codes.items() if k.startswith("seg-")]
print(json.dumps({"init": codes.get("init"), "segments": sorted(set(segs)), "count": len(segs),
                  "corrupt": codes.get("corrupt"), "fin": codes.get("fin")}))
