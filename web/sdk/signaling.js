// @ts-check
/**
 * The signaling WebSocket client: typed messages, automatic reconnection with backoff,
 * keep-alive pings, and a send queue that holds messages while the socket is down.
 *
 * The queue is gated by a *ready* flag: after a (re)connection the owner first sends
 * `join`/`random` with {@link Signaling#sendNow}, and calls {@link Signaling#setReady} once
 * the server confirmed it, which flushes what {@link Signaling#send} queued meanwhile.
 * @module
 */

import { Emitter } from './emitter.js';
import { SwitchboardError } from './errors.js';

/** @typedef {import('./types.js').ClientMessage} ClientMessage */
/** @typedef {import('./types.js').ServerMessage} ServerMessage */

/**
 * Events of {@link Signaling}:
 * - `open` — the socket is open; `reconnected` is true after a lost connection.
 * - `close` — the socket closed; `reconnecting` tells whether a new attempt is scheduled.
 * - `message` — every server message, parsed.
 * - `server-error` — a server `error` message (also delivered as `message`).
 * @typedef {object} SignalingEvents
 * @property {{ reconnected: boolean }} open
 * @property {{ code: number, reason: string, reconnecting: boolean }} close
 * @property {ServerMessage} message
 * @property {{ code: string, message: string }} server-error
 */

/** @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} SignalingState */

/** The default signaling URL for the page's own server. */
export function defaultSignalingUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws`;
}

const MAX_QUEUE = 2000;

/** @extends {Emitter<SignalingEvents>} */
export class Signaling extends Emitter {
  /**
   * @param {object} [options]
   * @param {string} [options.url] defaults to `ws(s)://<this host>/ws`
   * @param {boolean} [options.reconnect] reconnect after a lost connection (default true)
   * @param {number} [options.pingIntervalMs] keep-alive period (default 15 s)
   * @param {number} [options.pongTimeoutMs] close and reconnect when nothing arrives for this
   *   long after a ping (default 10 s)
   */
  constructor({ url, reconnect = true, pingIntervalMs = 15000, pongTimeoutMs = 10000 } = {}) {
    super();
    this.url = url || defaultSignalingUrl();
    this.reconnect = reconnect;
    this.pingIntervalMs = pingIntervalMs;
    this.pongTimeoutMs = pongTimeoutMs;
    /** @type {SignalingState} */
    this.state = 'idle';
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {ClientMessage[]} */
    this._queue = [];
    this._ready = false;
    this._attempt = 0;
    this._everOpened = false;
    this._pingId = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._retryTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._pingTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._pongTimer = undefined;
    this._onOnline = () => {
      if (this.state === 'reconnecting') {
        clearTimeout(this._retryTimer);
        this._open();
      }
    };
  }

  /**
   * Open the socket. Resolves when it is open; rejects with a {@link SwitchboardError}
   * (`connection_failed`) if the first attempt fails.
   * @returns {Promise<void>}
   */
  connect() {
    if (this.state !== 'idle') return Promise.resolve();
    window.addEventListener('online', this._onOnline);
    return new Promise((resolve, reject) => {
      const offOpen = this.once('open', () => {
        offClose();
        resolve();
      });
      const offClose = this.once('close', () => {
        offOpen();
        this.close();
        reject(new SwitchboardError('connection_failed'));
      });
      this._open();
    });
  }

  /** @private */
  _open() {
    this.state = this._everOpened ? 'reconnecting' : 'connecting';
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      console.error('switchboard: cannot open WebSocket', err);
      this._closed(1006, String(err));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const reconnected = this._everOpened;
      this._everOpened = true;
      this._attempt = 0;
      this.state = 'open';
      this._startPing();
      this.emit('open', { reconnected });
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this._gotTraffic();
      if (typeof ev.data !== 'string') return;
      /** @type {ServerMessage} */
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      if (msg.type === 'pong') return;
      if (msg.type === 'error') this.emit('server-error', { code: msg.code, message: msg.message });
      this.emit('message', msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this._closed(ev.code, ev.reason);
    };
  }

  /**
   * @private
   * @param {number} code
   * @param {string} reason
   */
  _closed(code, reason) {
    this.ws = null;
    this._ready = false;
    this._stopPing();
    if (this.state === 'closed') return;
    const reconnecting = this.reconnect && this._everOpened;
    this.state = reconnecting ? 'reconnecting' : 'closed';
    this.emit('close', { code, reason, reconnecting });
    if (reconnecting) {
      const base = Math.min(10000, 500 * 2 ** this._attempt);
      this._attempt += 1;
      const delay = base * (0.75 + Math.random() * 0.5);
      this._retryTimer = setTimeout(() => this._open(), delay);
    }
  }

  /** @private */
  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => {
      this.sendNow({ type: 'ping', id: ++this._pingId });
      if (this._pongTimer === undefined) {
        this._pongTimer = setTimeout(() => {
          // Nothing came back: the path is dead even if the socket does not know yet.
          this._pongTimer = undefined;
          const ws = this.ws;
          if (ws) {
            this._closed(4000, 'keep-alive timeout');
            ws.onclose = null;
            ws.close();
          }
        }, this.pongTimeoutMs);
      }
    }, this.pingIntervalMs);
  }

  /** @private */
  _gotTraffic() {
    clearTimeout(this._pongTimer);
    this._pongTimer = undefined;
  }

  /** @private */
  _stopPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = undefined;
    this._gotTraffic();
  }

  /** Whether the socket is open right now. */
  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Send now if the socket is open, bypassing the queue (for `join`, `random`, `leave`).
   * @param {ClientMessage} msg
   * @returns {boolean} whether it was sent
   */
  sendNow(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /**
   * Send when ready: immediately if the socket is open and {@link setReady} was called
   * since the last (re)connection, otherwise queued (bounded; the oldest are dropped).
   * @param {ClientMessage} msg
   */
  send(msg) {
    if (this._ready && this.sendNow(msg)) return;
    this._queue.push(msg);
    if (this._queue.length > MAX_QUEUE) this._queue.shift();
  }

  /** Mark the session as established on this socket and flush the queue. */
  setReady() {
    this._ready = true;
    const queued = this._queue;
    this._queue = [];
    for (const msg of queued) this.send(msg);
  }

  /** Drop queued messages (e.g. after our identity changed). */
  clearQueue() {
    this._queue = [];
  }

  /** Close for good; no reconnection. */
  close() {
    window.removeEventListener('online', this._onOnline);
    clearTimeout(this._retryTimer);
    this._stopPing();
    this.state = 'closed';
    const ws = this.ws;
    this.ws = null;
    this._ready = false;
    this._queue = [];
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.onopen = null;
      try {
        ws.close(1000, 'bye');
      } catch {
        // Already closing.
      }
    }
  }
}
