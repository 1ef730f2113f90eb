// MQTT.js over WebSocket against quicft: a subscriber on one URL, a publisher on another, QoS 0 and
// 1 (and a 200 KB message, several WebSocket frames' worth for some stacks). Prints one JSON line
// for tests/tests/websocket.rs. Usage: node ws_pubsub.mjs SUB_URL PUB_URL CA_PEM
import fs from "node:fs";
import mqtt from "mqtt";

const [subUrl, pubUrl, caPath] = process.argv.slice(2);
const ca = fs.readFileSync(caPath);
const opts = (clientId) => ({ clientId, protocolVersion: 5, ca, rejectUnauthorized: true, reconnectPeriod: 0, connectTimeout: 10000 });
const out = { messages: [], acks: [] };

function connect(url, id) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, opts(id));
    c.once("connect", (ack) => resolve([c, ack]));
    c.once("error", reject);
  });
}

const timer = setTimeout(() => { console.log(JSON.stringify({ ...out, error: "timeout" })); process.exit(1); }, 30000);
try {
  const [sub, subAck] = await connect(subUrl, "mqttjs-sub");
  out.connack = { reason: subAck.reasonCode ?? 0, shared: subAck.properties?.sharedSubscriptionAvailable };
  const granted = await sub.subscribeAsync("ws/#", { qos: 1 });
  out.granted = granted.map((g) => g.qos);
  const big = Buffer.alloc(200 * 1024, 7);
  const want = 3;
  const got = new Promise((resolve) => {
    sub.on("message", (topic, payload, packet) => {
      out.messages.push({ topic, qos: packet.qos, len: payload.length, text: payload.length < 100 ? payload.toString() : null, ok: topic !== "ws/big" || payload.equals(big) });
      if (out.messages.length === want) resolve();
    });
  });
  const [pub] = await connect(pubUrl, "mqttjs-pub");
  await pub.publishAsync("ws/q0", "hello 0", { qos: 0 });
  const ack = await pub.publishAsync("ws/q1", "hello 1", { qos: 1 });
  out.acks.push(ack?.reasonCode ?? 0);
  await pub.publishAsync("ws/big", big, { qos: 1 });
  await got;
  out.messages.sort((a, b) => a.topic.localeCompare(b.topic));
  await pub.endAsync();
  await sub.endAsync();
  clearTimeout(timer);
  console.log(JSON.stringify(out));
} catch (e) {
  console.log(JSON.stringify({ ...out, error: String(e) }));
  process.exit(1);
}
