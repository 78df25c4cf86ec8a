// Unit tests of dws-client.js with a fake WebSocket: the paths a real
// server rarely takes on demand (close codes, a new epoch, an old server
// without seq or epoch, backoff). Node's built-in runner, no dependencies:
//   node --test cmd/dws/app/static/dws-client.test.mjs
// scripts/browser-resume-check.sh runs it before the browser check.
import test from "node:test";
import assert from "node:assert/strict";

class FakeWS {
  static all = [];
  constructor(url, proto) { this.url = url; this.proto = proto; this.readyState = 0; this.sent = []; FakeWS.all.push(this); }
  open() { this.readyState = 1; }
  recv(obj) { this.onmessage({ data: JSON.stringify(obj) }); }
  send(s) { this.sent.push(JSON.parse(s)); }
  close(code = 1000, reason = "") { this.readyState = 3; this.onclose({ code, reason }); }
}
globalThis.WebSocket = FakeWS;
const { DwsClient } = await import(new URL("./dws-client.js", import.meta.url));
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
const base = "ws://h/ws/demo/agent1?user=u&token=t&x-api-key=k";

function mk(extra = {}) {
  const ev = { events: [], resyncs: [], errors: [], replaced: 0, dups: [] };
  const c = new DwsClient({ url: base, minDelayMs: 1, maxDelayMs: 2,
    onEvent: (p, s) => ev.events.push(s), onResync: (r) => ev.resyncs.push(r), onError: (e) => ev.errors.push(e),
    onReplaced: () => ev.replaced++, onDuplicate: (s) => ev.dups.push(s), ...extra });
  return { c, ev };
}
const last = () => FakeWS.all[FakeWS.all.length - 1];

test("resume URL, dedupe, reselect since", async () => {
  FakeWS.all = [];
  const { c, ev } = mk();
  c.connect(); await tick();
  assert.equal(last().url, base);
  last().open(); last().recv({ type: "ready", epoch: "E1" });
  c.selectChat("x");
  assert.deepEqual(last().sent.at(-1), { type: "select_chat", chat_id: "x" });
  for (const s of [1, 2, 2, 3]) last().recv({ type: "event", seq: s, payload: {} });
  assert.deepEqual(ev.events, [1, 2, 3]); assert.deepEqual(ev.dups, [2]);
  last().close(1006); await tick(20);
  const u = new URL(last().url);
  assert.equal(u.searchParams.get("since"), "3"); assert.equal(u.searchParams.get("epoch"), "E1");
  assert.equal(u.searchParams.get("chat_id"), "x"); assert.equal(u.searchParams.get("token"), "t");
  last().open(); last().recv({ type: "ready", epoch: "E1" });
  last().recv({ type: "event", seq: 3, payload: {} }); last().recv({ type: "event", seq: 4, payload: {} });
  assert.deepEqual(ev.events, [1, 2, 3, 4]);
  c.selectChat("y"); c.selectChat("x");
  assert.deepEqual(last().sent.at(-1), { type: "select_chat", chat_id: "x", since: 4 });
  c.selectChat("y", 0);
  assert.deepEqual(last().sent.at(-1), { type: "select_chat", chat_id: "y", since: 0 });
  last().recv({ type: "resync", payload: { reason: "too_old" } });
  assert.deepEqual(ev.resyncs, ["too_old"]);
  assert.equal(c.stats.reconnects, 1);
  c.close();
});

test("new epoch resets the position", async () => {
  FakeWS.all = [];
  const { c, ev } = mk();
  c.connect(); await tick(); last().open(); last().recv({ type: "ready", epoch: "E1" });
  last().recv({ type: "event", seq: 7, payload: {} });
  last().close(1001); await tick(20);
  last().open(); last().recv({ type: "ready", epoch: "E2" });
  last().recv({ type: "resync", payload: { reason: "epoch_changed" } });
  last().recv({ type: "event", seq: 1, payload: {} });
  assert.deepEqual(ev.events, [7, 1]); assert.equal(c.lastSeq, 1); assert.equal(c.epoch, "E2");
  c.close();
});

test("ready seq is the first position; a resync moves it there", async () => {
  FakeWS.all = [];
  const { c, ev } = mk();
  c.connect(); await tick(); last().open(); last().recv({ type: "ready", epoch: "E", seq: 0 });
  last().close(1006); await tick(20); // dropped before any event, on an empty stream
  assert.equal(new URL(last().url).searchParams.get("since"), "0");
  last().open(); last().recv({ type: "ready", epoch: "E", seq: 40 }); // resumed: keeps since 0
  assert.equal(c.lastSeq, 0);
  last().recv({ type: "resync", payload: { reason: "too_many" } });
  assert.equal(c.lastSeq, 40);
  last().close(1006); await tick(20);
  assert.equal(new URL(last().url).searchParams.get("since"), "40");
  last().open(); last().recv({ type: "ready", epoch: "E", seq: 45 });
  last().recv({ type: "event", seq: 41, payload: {} });
  assert.deepEqual(ev.events, [41]); assert.equal(c.lastSeq, 41);
  c.close();
});

test("old server: no seq, no epoch, no since", async () => {
  FakeWS.all = [];
  const { c, ev } = mk();
  c.connect(); await tick(); last().open(); last().recv({ type: "ready" });
  last().recv({ type: "event", payload: { a: 1 } }); last().recv({ type: "event", payload: { a: 1 } });
  assert.equal(ev.events.length, 2);
  last().close(1006); await tick(20);
  assert.equal(last().url, base);
  c.close();
});

for (const [code, want] of [[4402, "replaced"], [4401, "error"], [4403, "error"], [1001, "reconnect"], [1006, "reconnect"], [4408, "reconnect"]]) {
  test("close " + code + " → " + want, async () => {
    FakeWS.all = [];
    const { c, ev } = mk();
    c.connect(); await tick(); last().open(); last().recv({ type: "ready", epoch: "E" });
    last().close(code); await tick(20);
    assert.equal(FakeWS.all.length, want === "reconnect" ? 2 : 1);
    if (want === "replaced") assert.equal(ev.replaced, 1);
    if (want === "error") assert.equal(ev.errors[0].code, code);
    c.close();
  });
}

test("backoff grows with jitter and stops at maxAttempts", async () => {
  FakeWS.all = [];
  const delays = [];
  const { c, ev } = mk({ minDelayMs: 100, maxDelayMs: 400, maxAttempts: 3,
    onStatus: (s, d) => { if (d && d.delayMs !== undefined) delays.push(d.delayMs); } });
  const orig = Math.random; Math.random = () => 0.999;
  c.connect(); await tick();
  last().close(1006); await tick(120); last().close(1006); await tick(220); last().close(1006); await tick(420); last().close(1006);
  Math.random = orig;
  assert.deepEqual(delays, [100, 200, 400]);
  assert.equal(ev.errors.at(-1).gaveUp, true);
});
