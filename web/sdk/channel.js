// @ts-check
/**
 * The `switchboard` data-channel protocol, one end of it: JSON control messages — chat,
 * media state (which stream is camera or screen, mic/camera on or off), file headers — and
 * file transfers (a `file` header, then 16 KiB binary chunks with backpressure on
 * `bufferedAmount`).
 *
 * A {@link ChannelEndpoint} speaks the protocol over one `RTCDataChannel` with one remote
 * sender. It does not care how the channel was made: a {@link PeerLink} (peer.js) uses one
 * endpoint both ways on its negotiated channel; a {@link ServerLink} (server-link.js) sends
 * on one endpoint whose channel the server fans out to the room, and receives on one
 * endpoint per other participant (the channels the server opens, labelled
 * `<sender id>/switchboard`). Messages that are not about chat, state or files (e.g. a
 * peer's `reconnect` request) are handed to the owner as `control`.
 *
 * An endpoint may outlive its channel: {@link ChannelEndpoint#attach} swaps in a new one
 * (after a new connection), and text sent while no channel is open is queued (bounded).
 * @module
 */

import { Emitter } from './emitter.js';

/** @typedef {import('./types.js').StreamKind} StreamKind */

/** Largest file an endpoint sends or accepts. */
export const MAX_FILE_SIZE = 100 * 1024 * 1024;
/** Binary chunk size on the data channel. */
export const FILE_CHUNK_SIZE = 16 * 1024;
const FILE_READ_SIZE = 1024 * 1024;
const BUFFER_HIGH = 1024 * 1024;
const BUFFER_LOW = 256 * 1024;
const MAX_PENDING_MESSAGES = 200;
const CHANNEL_WAIT_MS = 15000;

/**
 * Data-channel control messages. `to` on a file header addresses one participant when the
 * channel reaches several (SFU rooms); the others skip the file.
 * @typedef {{ t: 'chat', text: string, ts: number }
 *   | { t: 'state', streams: Record<string, StreamKind>, mic: boolean, camera: boolean }
 *   | { t: 'file', id: string, name: string, size: number, mime: string, to?: string }
 *   | { t: 'file-abort', id: string }
 *   | { t: 'reconnect' }} ChannelMessage
 */

/**
 * @typedef {object} FileProgress
 * @property {string} transferId
 * @property {'send' | 'receive'} direction
 * @property {string} fileName
 * @property {number} size total bytes
 * @property {number} bytes bytes done so far
 */

/**
 * @typedef {object} ReceivedFile
 * @property {string} transferId
 * @property {string} fileName
 * @property {number} size
 * @property {string} mimeType
 * @property {Blob} blob
 */

/**
 * @typedef {object} IncomingFile
 * @property {string} id
 * @property {string} name
 * @property {number} size
 * @property {string} mime
 * @property {number} received
 * @property {ArrayBuffer[]} chunks
 * @property {boolean} refused skip its chunks (too large, or addressed to someone else)
 * @property {boolean} quiet refused without telling anyone (not for us)
 * @property {number} lastProgress
 */

/**
 * Events of {@link ChannelEndpoint}:
 * - `open` — the channel opened (queued text has been sent).
 * - `chat`, `state` — a chat or media-state message arrived.
 * - `control` — any other JSON message (the owner's business, e.g. `reconnect`).
 * - `file-progress`, `file`, `file-sent`, `file-error` — file transfers either way.
 * @typedef {object} ChannelEvents
 * @property {{}} open
 * @property {{ text: string, ts: number }} chat
 * @property {{ streams: Record<string, StreamKind>, mic: boolean, camera: boolean }} state
 * @property {{ t: string }} control
 * @property {FileProgress} file-progress
 * @property {ReceivedFile} file
 * @property {{ transferId: string, fileName: string, size: number }} file-sent
 * @property {{ transferId: string, fileName: string, direction: 'send' | 'receive', message: string }} file-error
 */

/**
 * @typedef {object} ChannelEndpointOptions
 * @property {() => string} name who is at the other end, for messages to people
 *   ("Cannot send … to NAME")
 * @property {() => string} [selfId] our participant id: file headers addressed to anyone
 *   else are skipped
 */

/** @extends {Emitter<ChannelEvents>} */
export class ChannelEndpoint extends Emitter {
  /** @param {ChannelEndpointOptions} options */
  constructor(options) {
    super();
    this._opts = options;
    /** @type {RTCDataChannel | null} */
    this.dc = null;
    this.closed = false;
    /** @type {string[]} text to send once the channel opens */
    this._pending = [];
    /** @type {IncomingFile | null} */
    this._incoming = null;
    /** @type {Promise<void>} */
    this._fileChain = Promise.resolve();
  }

  /**
   * Speak over `dc` from now on (a previous channel is closed; a file it was bringing in
   * fails).
   * @param {RTCDataChannel} dc
   */
  attach(dc) {
    this.detach();
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = BUFFER_LOW;
    let opened = false;
    const onOpen = () => {
      // A channel the other side opened may be open already when we get it.
      if (opened || this.closed || dc !== this.dc) return;
      opened = true;
      const pending = this._pending;
      this._pending = [];
      for (const text of pending) dc.send(text);
      this.emit('open', {});
    };
    dc.onopen = onOpen;
    dc.onmessage = (ev) => {
      if (dc === this.dc) this._onMessage(ev.data);
    };
    dc.onclose = () => {
      if (dc === this.dc) this._abortIncoming();
    };
    this.dc = dc;
    if (dc.readyState === 'open') onOpen();
  }

  /** Close the current channel, if any, and forget it. */
  detach() {
    const dc = this.dc;
    this.dc = null;
    this._abortIncoming();
    if (dc) {
      try {
        dc.close();
      } catch {
        // Already closed.
      }
    }
  }

  /** Whether the channel is open. */
  get open() {
    return this.dc !== null && this.dc.readyState === 'open';
  }

  /**
   * Send a JSON message now, or once the channel opens (bounded queue).
   * @param {object} msg
   */
  send(msg) {
    const text = JSON.stringify(msg);
    if (this.dc && this.dc.readyState === 'open') {
      this.dc.send(text);
    } else if (this._pending.length < MAX_PENDING_MESSAGES) {
      this._pending.push(text);
    }
  }

  /**
   * Send a JSON message only if the channel is open right now.
   * @param {object} msg
   * @returns {boolean} whether it was sent
   */
  sendIfOpen(msg) {
    if (!this.open || !this.dc) return false;
    this.dc.send(JSON.stringify(msg));
    return true;
  }

  /**
   * Send a chat message (queued until the channel opens).
   * @param {string} text
   * @param {number} ts Unix milliseconds
   */
  sendChat(text, ts) {
    this.send({ t: 'chat', text, ts });
  }

  /**
   * Send a file. Transfers on one endpoint run one after another. Resolves when the last
   * chunk is handed to the channel.
   * @param {File} file
   * @param {string} transferId
   * @param {string} [to] the one participant it is for, where the channel reaches several
   * @returns {Promise<void>}
   */
  sendFile(file, transferId, to) {
    const run = this._fileChain.then(() => this._sendFileNow(file, transferId, to));
    this._fileChain = run.catch(() => {});
    return run;
  }

  /**
   * @private
   * @param {File} file
   * @param {string} id
   * @param {string | undefined} to
   */
  async _sendFileNow(file, id, to) {
    const name = this._opts.name();
    const fail = (/** @type {string} */ message) => {
      this.emit('file-error', { transferId: id, fileName: file.name, direction: 'send', message });
      return new Error(message);
    };
    if (file.size > MAX_FILE_SIZE) {
      throw fail(`"${file.name}" is larger than 100 MB and cannot be sent.`);
    }
    const dc = await this._waitChannel();
    if (!dc) throw fail(`Cannot send "${file.name}" to ${name}: not connected.`);
    /** @type {ChannelMessage} */
    const header = { t: 'file', id, name: file.name, size: file.size, mime: file.type };
    if (to) header.to = to;
    dc.send(JSON.stringify(header));
    let sent = 0;
    let lastProgress = 0;
    this.emit('file-progress', { transferId: id, direction: 'send', fileName: file.name, size: file.size, bytes: 0 });
    while (sent < file.size) {
      const block = await file.slice(sent, sent + FILE_READ_SIZE).arrayBuffer();
      for (let at = 0; at < block.byteLength; at += FILE_CHUNK_SIZE) {
        if (dc.bufferedAmount > BUFFER_HIGH) await waitBufferLow(dc);
        if (dc.readyState !== 'open' || this.closed || dc !== this.dc) {
          throw fail(`Sending "${file.name}" to ${name} stopped: the connection closed.`);
        }
        const chunk = new Uint8Array(block, at, Math.min(FILE_CHUNK_SIZE, block.byteLength - at));
        dc.send(chunk);
        sent += chunk.byteLength;
        const now = performance.now();
        if (now - lastProgress > 100 || sent === file.size) {
          lastProgress = now;
          this.emit('file-progress', { transferId: id, direction: 'send', fileName: file.name, size: file.size, bytes: sent });
        }
      }
    }
    this.emit('file-sent', { transferId: id, fileName: file.name, size: file.size });
  }

  /**
   * Wait up to 15 s for the channel to open.
   * @private
   * @returns {Promise<RTCDataChannel | null>}
   */
  _waitChannel() {
    return new Promise((resolve) => {
      const started = performance.now();
      const poll = () => {
        if (this.closed) resolve(null);
        else if (this.dc && this.dc.readyState === 'open') resolve(this.dc);
        else if (performance.now() - started > CHANNEL_WAIT_MS) resolve(null);
        else setTimeout(poll, 100);
      };
      poll();
    });
  }

  /**
   * @private
   * @param {unknown} data
   */
  _onMessage(data) {
    if (this.closed) return;
    if (typeof data !== 'string') {
      if (data instanceof ArrayBuffer) this._onFileChunk(data);
      return;
    }
    /** @type {ChannelMessage} */
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.t !== 'string') return;
    switch (msg.t) {
      case 'chat':
        if (typeof msg.text === 'string') {
          this.emit('chat', { text: msg.text, ts: typeof msg.ts === 'number' ? msg.ts : Date.now() });
        }
        break;
      case 'state': {
        const streams = msg.streams && typeof msg.streams === 'object' ? msg.streams : {};
        this.emit('state', { streams, mic: msg.mic !== false, camera: msg.camera !== false });
        break;
      }
      case 'file':
        this._onFileHeader(msg);
        break;
      case 'file-abort':
        if (this._incoming && this._incoming.id === msg.id) {
          const f = this._incoming;
          this._incoming = null;
          if (!f.refused) {
            this.emit('file-error', {
              transferId: f.id,
              fileName: f.name,
              direction: 'receive',
              message: `The sender cancelled "${f.name}".`,
            });
          }
        }
        break;
      default:
        this.emit('control', msg);
        break;
    }
  }

  /**
   * @private
   * @param {{ id: string, name: string, size: number, mime: string, to?: string }} msg
   */
  _onFileHeader(msg) {
    if (this._incoming && !this._incoming.refused) {
      const f = this._incoming;
      this.emit('file-error', {
        transferId: f.id,
        fileName: f.name,
        direction: 'receive',
        message: `Receiving "${f.name}" was interrupted.`,
      });
    }
    const name = typeof msg.name === 'string' && msg.name ? msg.name : 'file';
    const size = Number(msg.size);
    const id = String(msg.id);
    const quiet = typeof msg.to === 'string' && msg.to !== (this._opts.selfId?.() ?? msg.to);
    const refused = quiet || !(size >= 0) || size > MAX_FILE_SIZE;
    this._incoming = {
      id,
      name,
      size,
      mime: typeof msg.mime === 'string' ? msg.mime : '',
      received: 0,
      chunks: [],
      refused,
      quiet,
      lastProgress: 0,
    };
    if (quiet) return;
    if (refused) {
      this.emit('file-error', {
        transferId: id,
        fileName: name,
        direction: 'receive',
        message: `${this._opts.name()} tried to send "${name}", which is larger than 100 MB; it was refused.`,
      });
      return;
    }
    this.emit('file-progress', { transferId: id, direction: 'receive', fileName: name, size, bytes: 0 });
    if (size === 0) this._finishIncoming();
  }

  /**
   * @private
   * @param {ArrayBuffer} chunk
   */
  _onFileChunk(chunk) {
    const f = this._incoming;
    if (!f) return;
    f.received += chunk.byteLength;
    if (f.refused) {
      if (f.received >= f.size) this._incoming = null;
      return;
    }
    if (f.received > f.size) {
      this._incoming = null;
      this.emit('file-error', {
        transferId: f.id,
        fileName: f.name,
        direction: 'receive',
        message: `"${f.name}" arrived larger than announced and was discarded.`,
      });
      return;
    }
    f.chunks.push(chunk);
    const now = performance.now();
    if (now - f.lastProgress > 100 || f.received === f.size) {
      f.lastProgress = now;
      this.emit('file-progress', { transferId: f.id, direction: 'receive', fileName: f.name, size: f.size, bytes: f.received });
    }
    if (f.received === f.size) this._finishIncoming();
  }

  /** @private */
  _finishIncoming() {
    const f = this._incoming;
    if (!f) return;
    this._incoming = null;
    const blob = new Blob(f.chunks, { type: f.mime || 'application/octet-stream' });
    this.emit('file', { transferId: f.id, fileName: f.name, size: f.size, mimeType: f.mime, blob });
  }

  /**
   * End the file being received, if any, with an error: its channel closed.
   * @private
   */
  _abortIncoming() {
    const f = this._incoming;
    this._incoming = null;
    if (f && !f.refused) {
      this.emit('file-error', {
        transferId: f.id,
        fileName: f.name,
        direction: 'receive',
        message: `Receiving "${f.name}" stopped: the connection closed.`,
      });
    }
  }

  /** Close the channel for good; queued text is dropped. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this._incoming = null;
    this._pending = [];
    const dc = this.dc;
    this.dc = null;
    try {
      dc?.close();
    } catch {
      // Already closed.
    }
    this.removeAllListeners();
  }
}

/**
 * Resolve when the channel's buffer drains below its low threshold (or it closes). Polls
 * as well as listening, so a missed `bufferedamountlow` event cannot stall a transfer.
 * @param {RTCDataChannel} dc
 * @returns {Promise<void>}
 */
function waitBufferLow(dc) {
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      if (dc.readyState !== 'open' || dc.bufferedAmount <= dc.bufferedAmountLowThreshold) done();
    }, 50);
    const done = () => {
      clearInterval(timer);
      dc.removeEventListener('bufferedamountlow', done);
      dc.removeEventListener('close', done);
      resolve();
    };
    dc.addEventListener('bufferedamountlow', done);
    dc.addEventListener('close', done);
  });
}
