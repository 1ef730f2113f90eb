"""A minimal quicft device: MQTT 5 over TCP with paho-mqtt (>= 2), telemetry, and an EMQX-style file
upload that resumes from what the server already holds (`$file/{fileId}/status`, docs/PROTOCOL.md).

  python3 examples/device.py --port 1883 --client-id truck-17 --file big.bin
  python3 examples/device.py ... --stop-after 3   # die after 3 acknowledged segments; run again to resume
Prints one JSON line. Every PUBACK 0x00 to a segment means "these bytes are on the server's disk".
"""
import argparse, hashlib, json, os, queue, sys, threading, time
import paho.mqtt.client as mqtt

p = argparse.ArgumentParser()
p.add_argument("--host", default="127.0.0.1"); p.add_argument("--port", type=int, default=1883)
p.add_argument("--client-id", required=True); p.add_argument("--username"); p.add_argument("--password")
p.add_argument("--file", required=True); p.add_argument("--file-id")
p.add_argument("--segment-size", type=int, default=64 * 1024)
p.add_argument("--stop-after", type=int, help="exit abruptly after this many acknowledged segments")
a = p.parse_args()
data = open(a.file, "rb").read()
file_id = a.file_id or os.path.basename(a.file)
acks, responses = {}, queue.Queue()          # mid -> PUBACK reason code; $file-response JSON messages
cv = threading.Condition()

def on_publish(client, userdata, mid, reason_code, properties):
    with cv:
        acks[mid] = reason_code.value
        cv.notify_all()

c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.client_id, protocol=mqtt.MQTTv5)
c.on_publish = on_publish
c.on_message = lambda client, userdata, msg: responses.put(json.loads(msg.payload))
subscribed = threading.Event()
c.on_subscribe = lambda client, userdata, mid, codes, properties: subscribed.set()
if a.username:
    c.username_pw_set(a.username, a.password)
c.connect(a.host, a.port, keepalive=30)
c.loop_start()
# Answers to $file commands (and the only answer to status) arrive on $file-response/{clientId}.
c.subscribe(f"$file-response/{a.client_id}", qos=1)

def send(topic, payload=b""):
    """Publishes at QoS 1 (file commands must be QoS 1); returns the message id."""
    return c.publish(topic, payload, qos=1).mid

def wait(mids, timeout=30):
    """Waits for the PUBACKs of `mids`; returns their reason codes in order."""
    with cv:
        if not cv.wait_for(lambda: all(m in acks for m in mids), timeout):
            sys.exit("no PUBACK from the server")
        return [acks.pop(m) for m in mids]

def response_to(topic, timeout=30):
    """The $file-response message for the command published on `topic` (queue.Empty on timeout)."""
    while True:
        r = responses.get(timeout=timeout)
        if r["topic"] == topic:
            return r

# Telemetry: an ordinary QoS 1 publish on the same connection as the upload.
telemetry = wait([send(f"devices/{a.client_id}/telemetry", json.dumps({"temp": 21.5}))])[0]

# 1. What does the server hold already? 0x00 with `ranges`, or 0x10 (unknown transfer: init it).
subscribed.wait(10)                           # the response topic's SUBACK
held = []
code = wait([send(f"$file/{file_id}/status")])[0]
status = response_to(f"$file/{file_id}/status")
if code == 0x00 and status.get("state") == "complete":
    held = [[0, len(data)]]
elif code == 0x00:
    held = status["ranges"]
else:
    meta = {"name": os.path.basename(a.file), "size": len(data), "checksum": hashlib.sha256(data).hexdigest()}
    code = wait([send(f"$file/{file_id}/init", json.dumps(meta))])[0]
    if code != 0x00:
        sys.exit(f"init refused: 0x{code:02x} {response_to(f'$file/{file_id}/init')}")

def is_held(start, end):
    return any(s <= start and end <= e for s, e in held)

# 2. The segments the server lacks, 8 in flight, each with its SHA-256 in the topic.
todo = [o for o in range(0, len(data), a.segment_size) if not is_held(o, min(o + a.segment_size, len(data)))]
sent = acked = 0
while todo:
    batch, todo = todo[:8], todo[8:]
    mids = []
    for off in batch:
        seg = data[off:off + a.segment_size]
        mids.append(send(f"$file/{file_id}/{off}/{hashlib.sha256(seg).hexdigest()}", seg))
    sent += len(batch)
    for off, code in zip(batch, wait(mids)):
        if code == 0x00:
            acked += 1
            if a.stop_after is not None and acked >= a.stop_after:
                print(json.dumps({"stopped_after": acked}), flush=True)
                os._exit(0)               # like a power cut: no DISCONNECT, nothing flushed
        elif code in (0x80, 0x97):        # corrupt in transit / server busy: send it again later
            time.sleep(1 if code == 0x97 else 0)
            todo.append(off)
        else:                             # 0x10 restart from 0 (run again), 0x83 refused/cancelled
            sys.exit(f"segment {off}: 0x{code:02x}")

# 3. fin with the size and SHA-256: its PUBACK comes once the file is assembled and verified.
fin = f"$file/{file_id}/fin/{len(data)}/{hashlib.sha256(data).hexdigest()}"
code = wait([send(fin)], timeout=120)[0]
c.disconnect()
c.loop_stop()
print(json.dumps({"telemetry": telemetry, "resumed_bytes": sum(e - s for s, e in held),
                  "segments_sent": sent, "fin": code}))
sys.exit(0 if code == 0x00 else 1)
