/**
 * dws-client.js — reference browser client for dws (SPEC §2, §5, §5a).
 * Plain JavaScript, no build step, no dependencies; an ES module.
 *
 * Usage:
 *
 *   import { DwsClient } from "http://127.0.0.1:8081/client/dws-client.js";
 *   const client = new DwsClient({
 *     url: "ws://127.0.0.1:8080/ws/demo/agent1?user=dev&token=…&x-api-key=…",
 *     onEvent: (payload, seq) => render(payload),      // each event once, in order
 *     onResync: (reason) => reloadFromApi(),            // resume impossible: reload state
 *     onError: (err) => showLogin(err),                 // 4401/4403 (auth): no reconnect
 *     onReplaced: () => showBanner("open in another tab"),  // 4402: no reconnect
 *   });
 *   client.connect();
 *   client.selectChat("chat1");                         // messages.chat1 now reach us
 *
 * What it does:
 * - Keeps the epoch of the last `ready` and the highest `seq` seen. On a
 *   reconnect it adds `since={seq}&epoch={epoch}` (and `chat_id={X}` when a
 *   chat is selected) to the URL, so the server replays what was missed
 *   (SPEC §5a). The first position is the `seq` of the first `ready`
 *   (the stream's position as the socket opened), so a client that drops
 *   before its first event still misses nothing. Nothing is added until a
 *   seq was seen: a server that sends no seq or epoch (older dws) gets the
 *   plain URL and still works.
 * - Drops duplicates: seq is the event's sequence in the stream, unique
 *   across subjects, so a seq already delivered is a duplicate whatever
 *   subscription (chats or a chat's messages) it came from. The window of
 *   remembered seqs is bounded (dedupeWindow); a new epoch clears it.
 * - `{"type":"resync","payload":{"reason":R}}` calls onResync(R) and keeps
 *   going with live events from the ready frame's position: the app
 *   reloads from its own API.
 * - Reconnects with exponential backoff and full jitter, except after
 *   4402 (session-replaced: another tab took over) and 4401/4403 (auth).
 *   A browser sees a refused handshake (401, 403, 409, 429 ...) only as
 *   close 1006, so `url` may be a function returning a fresh URL (with a
 *   freshly minted token) for every attempt; maxAttempts bounds the loop.
 * - Re-selecting a chat sends `"since"`: the highest seq seen when that
 *   chat was left, so its messages published meanwhile are replayed.
 */

/** Close codes dws uses (SPEC §7). */
export const CloseCodes = Object.freeze({
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  INVALID_API_KEY: 4401,
  SESSION_REPLACED: 4402,
  INVALID_TOKEN: 4403,
  SLOW_CONSUMER: 4408,
  RATE_LIMITED: 4429,
});

const defaults = {
  protocol: "json.v1",
  minDelayMs: 500, // first backoff step
  maxDelayMs: 30000, // backoff ceiling
  maxAttempts: Infinity, // consecutive failed attempts before giving up
  dedupeWindow: 20000, // seqs remembered for dedupe (2 × resume.max_events)
};

/** Reference dws client: one socket, resumed across reconnects. */
export class DwsClient {
  /**
   * @param {object} opts
   * @param {string|function(): (string|Promise<string>)} opts.url user or admin
   *   WebSocket URL with token and x-api-key; a function is called per attempt.
   * @param {function(object, number|undefined, object):void} [opts.onEvent]
   *   payload, seq (undefined from servers without seq), the whole frame.
   * @param {function(number, object):void} [opts.onDuplicate] seq and frame of a dropped duplicate.
   * @param {function(string):void} [opts.onResync] reason: too_old | epoch_changed | too_many.
   * @param {function(object):void} [opts.onError] {code, reason} of a fatal close, or
   *   an error frame's payload ({code, message}) with fatal=false.
   * @param {function():void} [opts.onReplaced] another socket of this user took over (4402).
   * @param {function(string, object):void} [opts.onStatus] "connecting" | "open" |
   *   "reconnecting" | "closed", with details.
   */
  constructor(opts) {
    this.opts = { ...defaults, ...opts };
    this.epoch = null; // from ready; null until a server names one
    this.lastSeq = 0; // highest seq seen in this epoch (or the first ready's)
    this._positioned = false; // lastSeq is a real position (ready or event seq)
    this._readySeq = null; // the stream position the last ready named
    this.chatId = null; // selected chat
    this.stats = { received: 0, duplicates: 0, resyncs: 0, reconnects: 0 };
    this._seen = new Set(); // delivered seqs of this epoch (insertion order = age)
    this._leftAt = new Map(); // chat id → lastSeq when that chat was left
    this._ws = null;
    this._attempt = 0; // consecutive attempts without reaching ready
    this._timer = null;
    this._stopped = true;
    this._connects = 0;
    this._holdUntil = 0; // simulateDrop: no reconnect before this time
    this._onOnline = () => this._retryNow();
  }

  /** Opens the socket; reconnects on its own until close() or a fatal close code. */
  connect() {
    if (!this._stopped) return;
    this._stopped = false;
    if (typeof window !== "undefined") window.addEventListener("online", this._onOnline);
    this._open();
  }

  /** Closes the socket for good (code 1000); no reconnect. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    if (typeof window !== "undefined") window.removeEventListener("online", this._onOnline);
    if (this._ws) this._ws.close(1000, "client closed");
    this._status("closed", { code: 1000, byClient: true });
  }

  /**
   * Selects chat chatId: its messages reach this socket from now on, and
   * the chat is pre-selected on every reconnect. since (optional) replays
   * the chat's messages after that seq; by default, re-selecting a chat
   * asks for what was published since it was left.
   */
  selectChat(chatId, since) {
    chatId = String(chatId);
    if (this.chatId !== null && this.chatId !== chatId && this.lastSeq > 0) {
      this._leftAt.set(this.chatId, this.lastSeq);
    }
    if (since === undefined && this._leftAt.has(chatId)) since = this._leftAt.get(chatId);
    this.chatId = chatId;
    const msg = { type: "select_chat", chat_id: chatId };
    if (since !== undefined && since !== null) msg.since = since;
    return this.send(msg);
  }

  /** Sends a JSON message if the socket is open; reports whether it was sent. */
  send(obj) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(obj));
    return true;
  }

  /**
   * Simulates a network loss for demos and tests: closes the socket and
   * stays away at least holdMs before reconnecting with since.
   */
  simulateDrop(holdMs = 0) {
    this._holdUntil = Date.now() + holdMs;
    if (this._ws) this._ws.close(4000, "simulated drop");
  }

  /** The resume position: what a reconnect sends as epoch and since. */
  get position() {
    return { epoch: this.epoch, since: this.lastSeq, chatId: this.chatId };
  }

  /** Builds the URL of the next attempt from base (the app's URL). */
  resumeURL(base) {
    const u = new URL(base);
    for (const k of ["since", "epoch", "chat_id"]) u.searchParams.delete(k);
    if (this._positioned) {
      u.searchParams.set("since", String(this.lastSeq));
      if (this.epoch) u.searchParams.set("epoch", this.epoch);
    }
    if (this.chatId !== null && !u.pathname.endsWith("/ws/admin")) u.searchParams.set("chat_id", this.chatId);
    return u.toString();
  }

  async _open() {
    clearTimeout(this._timer);
    let base;
    try {
      base = typeof this.opts.url === "function" ? await this.opts.url() : this.opts.url;
    } catch (err) {
      this._scheduleReconnect({ code: 0, reason: "url: " + err });
      return;
    }
    if (this._stopped) return;
    const url = this.resumeURL(base);
    this._status(this._connects === 0 ? "connecting" : "reconnecting", { since: this.lastSeq, epoch: this.epoch });
    this._connects++;
    let ws;
    try {
      ws = new WebSocket(url, this.opts.protocol);
    } catch (err) {
      // A malformed URL will not get better by retrying.
      this._stopped = true;
      this._call("onError", { code: 0, reason: String(err), fatal: true });
      return;
    }
    this._ws = ws;
    ws.onmessage = (e) => this._frame(e.data);
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._closed(e.code, e.reason);
    };
  }

  _frame(data) {
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return; // dws sends JSON only; ignore anything else
    }
    switch (f.type) {
      case "ready":
        this._attempt = 0;
        if (f.epoch !== undefined && f.epoch !== this.epoch) {
          // A new stream (or the first ready): seqs of another epoch mean
          // nothing here. If we had resumed from an old epoch the server
          // also sends resync epoch_changed, which reaches onResync.
          if (this.epoch !== null) this._resetPosition();
          this.epoch = f.epoch;
        }
        if (typeof f.seq === "number") {
          // Where the stream was as this socket opened: everything after it
          // reaches us. A resumed socket keeps its older lastSeq (the
          // replay fills the gap up to here).
          this._readySeq = f.seq;
          if (!this._positioned) {
            this.lastSeq = f.seq;
            this._positioned = true;
          }
        }
        this._status("open", { epoch: this.epoch, resumedFrom: this.lastSeq });
        break;
      case "event":
        this._event(f);
        break;
      case "resync":
        this.stats.resyncs++;
        // Nothing was replayed: from here on we hold what came after the
        // ready frame's position, so a later reconnect asks from there.
        if (this._readySeq !== null && this._readySeq > this.lastSeq) this.lastSeq = this._readySeq;
        this._call("onResync", (f.payload && f.payload.reason) || "unknown");
        break;
      case "error":
        this._call("onError", { ...(f.payload || {}), fatal: false });
        break;
    }
  }

  _event(f) {
    const seq = typeof f.seq === "number" ? f.seq : undefined;
    if (seq !== undefined) {
      if (this._seen.has(seq)) {
        this.stats.duplicates++;
        this._call("onDuplicate", seq, f);
        return;
      }
      this._seen.add(seq);
      if (this._seen.size > this.opts.dedupeWindow) {
        this._seen.delete(this._seen.values().next().value); // oldest
      }
      if (seq > this.lastSeq) this.lastSeq = seq;
      this._positioned = true;
    }
    this.stats.received++;
    this._call("onEvent", f.payload, seq, f);
  }

  _resetPosition() {
    this.lastSeq = 0;
    this._positioned = false;
    this._seen.clear();
    this._leftAt.clear();
  }

  _closed(code, reason) {
    if (this._stopped) return;
    if (code === CloseCodes.SESSION_REPLACED) {
      this._stopped = true;
      this._status("closed", { code, reason });
      this._call("onReplaced");
      return;
    }
    if (code === CloseCodes.INVALID_API_KEY || code === CloseCodes.INVALID_TOKEN) {
      this._stopped = true;
      this._status("closed", { code, reason });
      this._call("onError", { code, reason, fatal: true });
      return;
    }
    // 1001 (deploy/drain), 1006 (network loss, crash, refused handshake),
    // 1011, 4408, 4429 ...: come back and resume.
    this._scheduleReconnect({ code, reason });
  }

  _scheduleReconnect(why) {
    this._attempt++;
    if (this._attempt > this.opts.maxAttempts) {
      this._stopped = true;
      this._status("closed", { ...why, gaveUp: true });
      this._call("onError", { ...why, fatal: true, gaveUp: true });
      return;
    }
    // Full jitter: a fleet of tabs cut off by one deploy spreads its
    // reconnects over the whole window instead of arriving together.
    const ceiling = Math.min(this.opts.maxDelayMs, this.opts.minDelayMs * 2 ** (this._attempt - 1));
    const delay = Math.max(Math.round(Math.random() * ceiling), this._holdUntil - Date.now());
    this.stats.reconnects++;
    this._status("reconnecting", { ...why, attempt: this._attempt, delayMs: delay });
    this._timer = setTimeout(() => this._open(), delay);
  }

  _retryNow() {
    if (this._stopped || this._ws || Date.now() < this._holdUntil) return;
    this._open();
  }

  _status(state, details) {
    this._call("onStatus", state, details);
  }

  _call(name, ...args) {
    const fn = this.opts[name];
    if (typeof fn !== "function") return;
    try {
      fn(...args);
    } catch (err) {
      console.error("dws-client: " + name + " threw", err);
    }
  }
}

if (typeof globalThis !== "undefined") globalThis.DwsClient = DwsClient;
