// @ts-check
/**
 * The one `RTCPeerConnection` of an SFU room: to the server (participant id `sfu`), which
 * forwards everyone's media and data (docs/protocol.md, "SFU rooms").
 *
 * - **Publishing.** Local camera, microphone and screen go out on `sendonly` transceivers;
 *   every offer we make carries `tracks` (`mid` → `microphone` | `camera` | `screen` |
 *   `screen-audio`), known once the offer is the local description. Camera video goes as
 *   three simulcast layers (rids `q`, `h`, `f`: a quarter, half and full resolution) where
 *   the browser takes `sendEncodings`, as one layer otherwise; the server picks the layer
 *   each receiver gets.
 * - **Receiving.** The server adds and stops the tracks we receive with offers of its own,
 *   which we answer. It is the polite side: an offer of its that crosses ours is ignored,
 *   and it offers again after answering us. A received track's `MediaStream` id says
 *   whose it is: `<participant id>` is the camera and microphone, `<participant id>-screen`
 *   the screen share. A stream whose m-lines the server stopped is reported removed.
 * - **Data.** We open a data channel labelled `switchboard` (not pre-negotiated); what we
 *   send on it reaches every other participant. The server opens one channel per other
 *   participant in our session, labelled `<sender id>/switchboard`. Both speak the same
 *   protocol as a peer's channel (channel.js): chat, media state, files. Whenever a channel
 *   from someone new appears we send our media state again, so newcomers learn it.
 * - **View hints.** For every video element the page registered with
 *   {@link ServerLink#observeTile}, a `ResizeObserver` measures it and we tell the server
 *   how large each received video track is shown (`view` `{mid, width, height}`: CSS pixels
 *   × `devicePixelRatio`; `0 × 0` while the element or the page is hidden), at most once a
 *   second per track and only when the size changed by more than a fifth.
 * - **Failure.** The server is ICE-lite (its one candidate is in its SDP, so we send no
 *   candidates) and gives up on a session whose ICE/DTLS is not up within 15 s or that
 *   goes silent (`error` `media_failed`). Then, or when the browser reports the connection
 *   `failed`, or when it never connects, the link starts a new session: a fresh
 *   `RTCPeerConnection` and a fresh offer — a few times, with growing pauses, before it
 *   reports `failed` for good. A signaling reconnect does not touch the session.
 *
 * Like a {@link PeerLink}, a server link never talks to the WebSocket itself: it hands
 * signaling messages to a callback.
 * @module
 */

import { ChannelEndpoint } from './channel.js';
import { Emitter } from './emitter.js';
import { createPeerConnection } from './peer.js';
import { summarizeStats, summarizeStreams } from './stats.js';

/** @typedef {import('./types.js').ClientMessage} ClientMessage */
/** @typedef {import('./types.js').PeerSignal} PeerSignal */
/** @typedef {import('./types.js').StreamKind} StreamKind */
/** @typedef {import('./types.js').TrackSource} TrackSource */
/** @typedef {import('./stats.js').PeerStats} PeerStats */
/** @typedef {import('./stats.js').StatsSample} StatsSample */
/** @typedef {import('./peer.js').LocalState} LocalState */
/** @typedef {import('./channel.js').FileProgress} FileProgress */
/** @typedef {import('./channel.js').ReceivedFile} ReceivedFile */

/** The server's participant id in SFU rooms. */
export const SERVER_ID = 'sfu';
/** The name the server's connection goes by in stats. */
export const SERVER_NAME = 'Server';
const CHANNEL_LABEL = 'switchboard';
/** Simulcast layers of camera video, lowest first (the server starts receivers on the first). */
const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4 },
  { rid: 'h', scaleResolutionDownBy: 2 },
  { rid: 'f', scaleResolutionDownBy: 1 },
];
/** Sessions started in a row without one getting connected before giving up. */
const MAX_SESSIONS = 4;
/** Pause before the 2nd, 3rd, … session. */
const RETRY_DELAYS_MS = [500, 2000, 5000];
/** A session not connected by then is given up (the server's own limit is 15 s). */
const CONNECT_TIMEOUT_MS = 20000;
/** An offer of ours unanswered this long is rolled back and made again. */
const ANSWER_TIMEOUT_MS = 10000;
/** A `media_failed` this soon after a new session began is about the previous one. */
const STALE_FAILURE_MS = 3000;
/** Media-state messages prompted by newcomers are sent at most this often. */
const STATE_RESEND_MS = 300;
/** `view` messages are sent at most this often per track. */
const VIEW_INTERVAL_MS = 1000;
/** A tile size change smaller than this (relative, per dimension) is not reported. */
const VIEW_CHANGE = 0.2;

/**
 * What we told the server about one received video track (by `mid`).
 * @typedef {object} ViewState
 * @property {{ width: number, height: number } | null} sent the last size sent
 * @property {number} sentAt `performance.now()` of that
 * @property {{ width: number, height: number } | null} pending a size to send later
 * @property {ReturnType<typeof setTimeout> | undefined} timer
 */

/**
 * Whether a tile size differs enough from the one the server knows to be worth a message.
 * @param {{ width: number, height: number } | null} before
 * @param {{ width: number, height: number }} now
 * @returns {boolean}
 */
export function viewChanged(before, now) {
  if (!before) return true;
  /** @param {number} a @param {number} b */
  const differs = (a, b) => (a === 0 || b === 0 ? a !== b : Math.abs(a - b) / a > VIEW_CHANGE);
  return differs(before.width, now.width) || differs(before.height, now.height);
}

/**
 * @typedef {object} ServerLinkOptions
 * @property {() => RTCIceServer[]} iceServers current ICE servers (a TURN relay, with
 *   `'relay'`; the server itself needs none)
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] `'all'` (default) or `'relay'`
 * @property {boolean} sendMedia whether local streams are published
 * @property {boolean} [simulcast] send camera video in three layers (default true)
 * @property {() => string} selfId our participant id
 * @property {(peerId: string) => string} nameOf a participant's display name
 * @property {(msg: ClientMessage) => void} signal sends a signaling message
 * @property {() => LocalState} local the current local streams and switches
 */

/** @typedef {{ peerId: string }} From */

/**
 * Events of {@link ServerLink}:
 * - `state` — the connection to the server changed state (`connecting`, `connected`,
 *   `disconnected`, `failed`, `closed`).
 * - `stream` — a participant's stream to show (again when it gained a track).
 * - `stream-removed` — a participant's stream ended.
 * - `media` — a participant switched microphone or camera.
 * - `chat`, `file-progress`, `file`, `file-sent`, `file-error` — as from a peer; `peerId`
 *   is the sender, or for our own transfers the addressee (`sfu`: everyone).
 * - `error` — the server refused a description, or the link gave up (`media_failed`).
 * @typedef {object} ServerLinkEvents
 * @property {{ state: string }} state
 * @property {From & { stream: MediaStream, kind: StreamKind }} stream
 * @property {From & { stream: MediaStream, kind: StreamKind }} stream-removed
 * @property {From & { mic: boolean, camera: boolean }} media
 * @property {From & { text: string, ts: number }} chat
 * @property {From & FileProgress} file-progress
 * @property {From & ReceivedFile} file
 * @property {From & { transferId: string, fileName: string, size: number }} file-sent
 * @property {From & { transferId: string, fileName: string, direction: 'send' | 'receive', message: string }} file-error
 * @property {{ code: string, message: string }} error
 */

/**
 * @typedef {object} RemoteStream
 * @property {MediaStream} stream
 * @property {string} peerId
 * @property {StreamKind} kind
 * @property {Set<string>} tracks ids of the tracks announced with it
 */

/**
 * Whose stream a received `MediaStream` id names, and which kind it is.
 * @param {string} id
 * @returns {{ peerId: string, kind: StreamKind }}
 */
export function parseStreamId(id) {
  return id.endsWith('-screen') ? { peerId: id.slice(0, -'-screen'.length), kind: 'screen' } : { peerId: id, kind: 'camera' };
}

/** @extends {Emitter<ServerLinkEvents>} */
export class ServerLink extends Emitter {
  /** @param {ServerLinkOptions} options */
  constructor(options) {
    super();
    this.peerId = SERVER_ID;
    this.name = SERVER_NAME;
    this._opts = options;
    this.closed = false;
    this._simulcast = options.simulcast !== false;

    /** Our `switchboard` channel: everything sent on it reaches the room. */
    this.outbox = new ChannelEndpoint({ name: () => 'everyone' });
    /** @type {Map<string, ChannelEndpoint>} the channels from other participants, by sender */
    this.inboxes = new Map();
    /** @type {Map<string, string>} addressee (or `sfu`) of our transfers, by transfer id */
    this._fileTargets = new Map();
    this._wireOutbox();

    /** @type {Map<string, RemoteStream>} streams reported with `stream`, by stream id */
    this._remote = new Map();
    /** @type {Map<string, { mic: boolean, camera: boolean }>} as each participant said */
    this.remoteMedia = new Map();

    /** @type {RTCPeerConnection} */
    this.pc = /** @type {any} */ (null);
    /** @type {Map<RTCRtpTransceiver, { source: TrackSource, kind: StreamKind }>} what we publish */
    this._published = new Map();
    /** Serializes negotiation steps. */
    this._chain = Promise.resolve();
    this._wantOffer = false;
    this._awaitingAnswer = false;
    /** Whether the outstanding offer asked for simulcast. */
    this._offeredSimulcast = false;
    /** Sessions started since the last one that got connected (that one included). */
    this._sessions = 0;
    /** `performance.now()` when the current session started. */
    this._sessionStartedAt = 0;
    this._gaveUp = false;
    this._lastState = '';
    /** `performance.now()` when the current session's `connectionState` became `connected`
     * (0 until then). */
    this.connectedAt = 0;
    /** How many times the session was replaced by a new one. */
    this.rebuilds = 0;
    /** @type {StatsSample | null} */
    this._lastSample = null;

    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._answerTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._connectTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._retryTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._stateTimer = undefined;

    /** @type {Map<HTMLVideoElement, MediaStream>} tiles whose size we report */
    this._tiles = new Map();
    /** @type {Map<string, ViewState>} what we told the server, by `mid` (current session) */
    this._views = new Map();
    /** @type {ResizeObserver | null} */
    this._resizeObserver = null;
    this._onVisibility = () => this._updateViews();

    this._startSession();
  }

  /** The connection state (falls back to the ICE state on browsers without it). */
  get connectionState() {
    if (this._gaveUp) return 'failed';
    return this.pc.connectionState ?? this.pc.iceConnectionState;
  }

  // ------------------------------------------------------------------ session

  /**
   * A new `RTCPeerConnection` with our media and channel, and the offer that opens the
   * session on the server.
   * @private
   */
  _startSession() {
    this._sessions += 1;
    this._sessionStartedAt = performance.now();
    this.connectedAt = 0;
    // `balanced`, not `max-bundle`: with `max-bundle`, Firefox offers every m-line but the
    // first with port 0 and `a=bundle-only`, and the server takes a port-0 application
    // m-line for "no data channels". The server answers with BUNDLE either way.
    const pc = createPeerConnection(this._opts.iceServers(), this._opts.iceTransportPolicy, 'balanced');
    this.pc = pc;
    pc.onconnectionstatechange = () => {
      if (pc === this.pc) this._onStateChange();
    };
    pc.oniceconnectionstatechange = () => {
      if (pc === this.pc) this._onStateChange();
    };
    pc.ontrack = (ev) => {
      if (pc === this.pc) this._onTrack(ev);
    };
    pc.ondatachannel = ({ channel }) => {
      if (pc === this.pc) this._onDataChannel(channel);
    };
    this.outbox.attach(pc.createDataChannel(CHANNEL_LABEL, { ordered: true }));
    if (this._opts.sendMedia) {
      const local = this._opts.local();
      if (local.camera) this._publish(local.camera, 'camera');
      if (local.screen) this._publish(local.screen, 'screen');
    }
    clearTimeout(this._connectTimer);
    this._connectTimer = setTimeout(() => {
      if (pc === this.pc && this.connectionState !== 'connected') this._sessionFailed('no connection to the server within 20 s');
    }, CONNECT_TIMEOUT_MS);
    this._onStateChange();
    this._requestOffer();
  }

  /**
   * The session cannot go on: start a new one after a pause, unless too many failed in a
   * row (then report `failed`).
   * @private
   * @param {string} reason
   */
  _sessionFailed(reason) {
    if (this.closed || this._gaveUp || this._retryTimer) return;
    if (this._sessions >= MAX_SESSIONS) {
      console.warn(`switchboard: giving up on the server connection: ${reason}`);
      this._gaveUp = true;
      this._teardown();
      this._onStateChange();
      this.emit('error', {
        code: 'media_failed',
        message: `The media connection to the server failed (${reason}); reload the page to try again.`,
      });
      return;
    }
    const delay = RETRY_DELAYS_MS[Math.max(0, Math.min(this._sessions - 1, RETRY_DELAYS_MS.length - 1))];
    console.warn(`switchboard: new session with the server in ${delay} ms: ${reason}`);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = undefined;
      this._enqueue(() => this._newSession());
    }, delay);
  }

  /** @private */
  _newSession() {
    if (this.closed) return;
    this._teardown();
    this.rebuilds += 1;
    this._startSession();
  }

  /**
   * Close the current peer connection and forget what rode on it: remote streams are
   * reported removed (the next session brings them back), channels closed.
   * @private
   */
  _teardown() {
    clearTimeout(this._answerTimer);
    clearTimeout(this._connectTimer);
    this._wantOffer = false;
    this._awaitingAnswer = false;
    this._published = new Map();
    this._lastSample = null;
    this.outbox.detach();
    for (const inbox of this.inboxes.values()) inbox.detach();
    for (const [id, entry] of [...this._remote]) this._dropRemote(id, entry);
    for (const view of this._views.values()) clearTimeout(view.timer);
    this._views.clear();
    this.pc?.close();
  }

  /**
   * Start over with a new session now, whatever the state (e.g. after we re-entered the
   * room as a new participant, whose old session the server dropped).
   */
  restart() {
    if (this.closed) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = undefined;
    this._sessions = 0;
    this._gaveUp = false;
    this._enqueue(() => this._newSession());
  }

  /**
   * Signaling came back after an outage: anything the server sent meanwhile may be lost.
   * An offer of ours makes the server answer and offer again whatever it still has to
   * change; a link that had given up starts over.
   */
  resync() {
    if (this.closed) return;
    if (this._gaveUp) this.restart();
    else if (!this._awaitingAnswer) this._requestOffer();
  }

  /** @private */
  _onStateChange() {
    if (this.closed) return;
    const state = this.connectionState;
    const ice = this.pc.iceConnectionState;
    if (state === 'connected' || ice === 'connected' || ice === 'completed') {
      // ICE alone may be up a little before DTLS: the session counts as connected then.
      if (!this.connectedAt && state === 'connected') this.connectedAt = performance.now();
      this._sessions = 1;
      clearTimeout(this._connectTimer);
    } else if (state === 'failed' || ice === 'failed') {
      this._sessionFailed('the connection to the server failed');
    }
    if (state !== this._lastState) {
      this._lastState = state;
      this.emit('state', { state });
    }
  }

  // ------------------------------------------------------------------ publishing

  /**
   * @private
   * @param {MediaStream} stream
   * @param {StreamKind} kind
   */
  _publish(stream, kind) {
    for (const track of stream.getTracks()) {
      /** @type {TrackSource} */
      const source =
        kind === 'camera' ? (track.kind === 'audio' ? 'microphone' : 'camera') : track.kind === 'audio' ? 'screen-audio' : 'screen';
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: 'sendonly', streams: [stream] };
      let transceiver = null;
      if (source === 'camera' && this._simulcast) {
        try {
          transceiver = this.pc.addTransceiver(track, { ...init, sendEncodings: SIMULCAST_LAYERS });
        } catch (err) {
          console.info('switchboard: simulcast not available, sending one layer', err);
        }
      }
      transceiver ??= this.pc.addTransceiver(track, init);
      this._published.set(transceiver, { source, kind });
    }
  }

  /**
   * Start publishing a local stream (e.g. a screen share); renegotiates.
   * @param {MediaStream} stream
   * @param {StreamKind} kind
   */
  addStream(stream, kind) {
    if (this.closed || this._gaveUp || !this._opts.sendMedia) return;
    this._unpublish(kind);
    this._publish(stream, kind);
    this._requestOffer();
    this._scheduleState(0);
  }

  /**
   * Stop publishing the local stream of that kind; renegotiates.
   * @param {StreamKind} kind
   */
  removeStream(kind) {
    if (this.closed || this._gaveUp) return;
    if (this._unpublish(kind)) this._requestOffer();
    this._scheduleState(0);
  }

  /**
   * @private
   * @param {StreamKind} kind
   * @returns {boolean} whether anything was published
   */
  _unpublish(kind) {
    let any = false;
    for (const [transceiver, info] of [...this._published]) {
      if (info.kind !== kind) continue;
      any = true;
      this._published.delete(transceiver);
      try {
        // The m-line turns inactive: the server unpublishes the track.
        this.pc.removeTrack(transceiver.sender);
      } catch (err) {
        console.warn('switchboard: removeTrack failed', err);
      }
    }
    return any;
  }

  /**
   * What each sending m-line of the current local description carries.
   * @private
   * @returns {Record<string, TrackSource>}
   */
  _trackSources() {
    /** @type {Record<string, TrackSource>} */
    const tracks = {};
    for (const [transceiver, info] of this._published) {
      if (transceiver.mid !== null) tracks[transceiver.mid] = info.source;
    }
    return tracks;
  }

  // ------------------------------------------------------------------ negotiation

  /**
   * Run `task` after every negotiation step queued before it.
   * @private
   * @param {() => void | Promise<void>} task
   */
  _enqueue(task) {
    this._chain = this._chain.then(task).catch((err) => console.warn('switchboard: negotiation with the server failed', err));
  }

  /** @private */
  _requestOffer() {
    if (this.closed || this._gaveUp) return;
    this._wantOffer = true;
    this._enqueue(() => this._offerIfReady());
  }

  /**
   * Make an offer if one is wanted and none is outstanding (otherwise the answer's
   * handling comes back here).
   * @private
   */
  async _offerIfReady() {
    const pc = this.pc;
    if (this.closed || this._gaveUp || !this._wantOffer || this._awaitingAnswer || pc.signalingState !== 'stable') return;
    this._wantOffer = false;
    try {
      await pc.setLocalDescription(await pc.createOffer());
    } catch (err) {
      if (pc !== this.pc) return;
      console.warn('switchboard: offer to the server failed', err);
      this._sessionFailed('could not make an offer');
      return;
    }
    const desc = pc.localDescription;
    if (pc !== this.pc || !desc) return;
    this._awaitingAnswer = true;
    this._offeredSimulcast = /^a=simulcast:/m.test(desc.sdp);
    this._opts.signal({ type: 'offer', to: SERVER_ID, sdp: desc.sdp, tracks: this._trackSources() });
    clearTimeout(this._answerTimer);
    this._answerTimer = setTimeout(() => this._enqueue(() => this._offerUnanswered(pc)), ANSWER_TIMEOUT_MS);
  }

  /**
   * Our offer got no answer (lost on the way, or the session is gone): a session that was
   * never up starts over; otherwise roll back and offer again.
   * @private
   * @param {RTCPeerConnection} pc
   */
  async _offerUnanswered(pc) {
    if (this.closed || pc !== this.pc || !this._awaitingAnswer) return;
    if (!this.connectedAt) {
      this._sessionFailed('the server did not answer');
      return;
    }
    this._awaitingAnswer = false;
    try {
      await pc.setLocalDescription({ type: 'rollback' });
    } catch (err) {
      console.warn('switchboard: rollback towards the server failed', err);
      this._sessionFailed('could not roll back an unanswered offer');
      return;
    }
    this._wantOffer = true;
    await this._offerIfReady();
  }

  /**
   * Feed a signaling message from the server. Messages are handled one at a time, in order.
   * @param {PeerSignal} msg
   */
  handleSignal(msg) {
    if (msg.type === 'offer' || msg.type === 'answer') this._enqueue(() => this._onDescription(msg.type, msg.sdp));
    // The server is ICE-lite: its candidate is in its SDP; it sends no `candidate`s.
  }

  /**
   * @private
   * @param {'offer' | 'answer'} type
   * @param {string} sdp
   */
  async _onDescription(type, sdp) {
    const pc = this.pc;
    if (this.closed || this._gaveUp) return;
    if (type === 'answer') {
      if (!this._awaitingAnswer || pc.signalingState !== 'have-local-offer') return;
      try {
        await pc.setRemoteDescription({ type, sdp });
      } catch (err) {
        if (pc !== this.pc) return;
        console.warn('switchboard: the server answer could not be applied', err);
        this._sessionFailed('the server answer could not be applied');
        return;
      }
      if (pc !== this.pc) return;
      this._awaitingAnswer = false;
      clearTimeout(this._answerTimer);
    } else {
      // Glare: the server drops its offer when ours crosses it, and offers again later.
      if (this._awaitingAnswer || pc.signalingState !== 'stable') return;
      try {
        await pc.setRemoteDescription({ type, sdp });
        await pc.setLocalDescription(await pc.createAnswer());
      } catch (err) {
        if (pc !== this.pc) return;
        console.warn('switchboard: the server offer could not be answered', err);
        this._sessionFailed('a server offer could not be answered');
        return;
      }
      const answer = pc.localDescription;
      if (pc !== this.pc || !answer) return;
      this._opts.signal({ type: 'answer', to: SERVER_ID, sdp: answer.sdp });
    }
    this._reconcileRemote();
    this._updateViews();
    await this._offerIfReady();
  }

  /**
   * The server reported a problem with our session.
   * @param {'media_failed' | 'invalid_sdp'} code
   * @param {string} message the server's words
   */
  handleError(code, message) {
    if (this.closed) return;
    if (code === 'media_failed') {
      // The server fails a session 15 s after it began at the earliest: a report this soon
      // after we started a new one is about the session it replaced.
      if (performance.now() - this._sessionStartedAt < STALE_FAILURE_MS) return;
      this._sessionFailed('the server dropped the media session');
      return;
    }
    this._enqueue(() => this._descriptionRefused(message));
  }

  /**
   * `invalid_sdp`: the server could not use our offer (or answer). An offer with simulcast
   * is made again without it, in a new session; anything else is reported.
   * @private
   * @param {string} message
   */
  async _descriptionRefused(message) {
    if (this.closed || this._gaveUp) return;
    console.warn(`switchboard: the server refused our description: ${message}`);
    if (this._awaitingAnswer && this._offeredSimulcast) {
      this._simulcast = false;
      this._newSession();
      return;
    }
    if (this._awaitingAnswer) {
      this._awaitingAnswer = false;
      clearTimeout(this._answerTimer);
      try {
        await this.pc.setLocalDescription({ type: 'rollback' });
      } catch {
        // The session is unusable anyway: it is reported below.
      }
    }
    this.emit('error', { code: 'invalid_sdp', message: `The server could not use this browser's media description: ${message}` });
    if (!this.connectedAt) {
      this._gaveUp = true;
      this._teardown();
      this._onStateChange();
    }
  }

  // ------------------------------------------------------------------ receiving

  /**
   * @private
   * @param {RTCTrackEvent} ev
   */
  _onTrack(ev) {
    const stream = ev.streams[0];
    if (!stream) {
      console.warn('switchboard: a track from the server without a stream was ignored');
      return;
    }
    const { peerId, kind } = parseStreamId(stream.id);
    let entry = this._remote.get(stream.id);
    if (entry && entry.stream !== stream) {
      this._dropRemote(stream.id, entry);
      entry = undefined;
    }
    if (!entry) {
      entry = { stream, peerId, kind, tracks: new Set() };
      this._remote.set(stream.id, entry);
      stream.addEventListener('removetrack', () => this._reconcileRemote());
    }
    ev.track.addEventListener('ended', () => this._reconcileRemote());
    if (entry.tracks.has(ev.track.id)) return;
    entry.tracks.add(ev.track.id);
    this.emit('stream', { peerId, stream, kind });
  }

  /**
   * Report streams none of whose tracks are received any more (the server stopped their
   * m-lines: the publisher stopped sharing, or left).
   * @private
   */
  _reconcileRemote() {
    if (this.closed) return;
    /** @type {Set<string>} */
    const live = new Set();
    for (const t of this.pc.getTransceivers()) {
      const dir = t.currentDirection;
      const receiving = dir === null || dir === 'recvonly' || dir === 'sendrecv';
      if (receiving && t.receiver.track.readyState === 'live') live.add(t.receiver.track.id);
    }
    for (const [id, entry] of [...this._remote]) {
      if (!entry.stream.getTracks().some((t) => live.has(t.id))) this._dropRemote(id, entry);
    }
  }

  /**
   * @private
   * @param {string} id
   * @param {RemoteStream} entry
   */
  _dropRemote(id, entry) {
    if (this._remote.get(id) !== entry) return;
    this._remote.delete(id);
    this.emit('stream-removed', { peerId: entry.peerId, stream: entry.stream, kind: entry.kind });
  }

  /** Remote streams reported so far. */
  get remoteStreams() {
    return [...this._remote.values()].map(({ peerId, stream, kind }) => ({ peerId, stream, kind }));
  }

  /**
   * A participant left: report its streams removed (the server stops them shortly) and
   * forget its channel.
   * @param {string} peerId
   */
  dropParticipant(peerId) {
    for (const [id, entry] of [...this._remote]) {
      if (entry.peerId === peerId) this._dropRemote(id, entry);
    }
    this.inboxes.get(peerId)?.close();
    this.inboxes.delete(peerId);
    this.remoteMedia.delete(peerId);
  }

  // ------------------------------------------------------------------ view hints

  /**
   * Report how large `video` (which shows the received `stream`) is on screen, now and
   * whenever that changes, so the server sends a layer no larger than needed (`view`).
   * @param {MediaStream} stream
   * @param {HTMLVideoElement} video
   */
  observeTile(stream, video) {
    if (this.closed) return;
    if (typeof ResizeObserver === 'undefined') return;
    if (!this._resizeObserver) {
      this._resizeObserver = new ResizeObserver(() => this._updateViews());
      document.addEventListener('visibilitychange', this._onVisibility);
    }
    const known = this._tiles.has(video);
    this._tiles.set(video, stream);
    if (!known) this._resizeObserver.observe(video);
    this._updateViews();
  }

  /**
   * Stop reporting `video`'s size (its tracks then count as hidden unless another element
   * shows them).
   * @param {HTMLVideoElement} video
   */
  unobserveTile(video) {
    if (!this._tiles.delete(video)) return;
    this._resizeObserver?.unobserve(video);
    this._updateViews();
  }

  /**
   * Measure every observed tile and tell the server about sizes that changed.
   * @private
   */
  _updateViews() {
    if (this.closed || !this.pc || this._tiles.size === 0) return;
    const hiddenPage = typeof document !== 'undefined' && document.visibilityState === 'hidden';
    const dpr = globalThis.devicePixelRatio || 1;
    /** @type {Map<string, { width: number, height: number }>} largest size per track id */
    const byTrack = new Map();
    for (const [video, stream] of this._tiles) {
      if (video.srcObject !== stream) continue;
      let width = 0;
      let height = 0;
      if (!hiddenPage && video.isConnected) {
        width = Math.round(video.clientWidth * dpr);
        height = Math.round(video.clientHeight * dpr);
        if (!width || !height || video.getClientRects().length === 0) width = height = 0;
      }
      for (const track of stream.getVideoTracks()) {
        const before = byTrack.get(track.id);
        if (!before || width * height > before.width * before.height) byTrack.set(track.id, { width, height });
      }
    }
    for (const t of this.pc.getTransceivers()) {
      const track = t.receiver.track;
      if (t.mid === null || track.kind !== 'video') continue;
      const size = byTrack.get(track.id);
      // A track no observed tile shows any more counts as hidden, if we ever reported it.
      if (size) this._reportView(t.mid, size);
      else if (this._views.has(t.mid)) this._reportView(t.mid, { width: 0, height: 0 });
    }
  }

  /**
   * Send `view` for `mid`, at most once a second and only for a real change.
   * @private
   * @param {string} mid
   * @param {{ width: number, height: number }} size
   */
  _reportView(mid, size) {
    let view = this._views.get(mid);
    if (!view) {
      view = { sent: null, sentAt: 0, pending: null, timer: undefined };
      this._views.set(mid, view);
    }
    if (!viewChanged(view.sent, size)) {
      view.pending = null;
      return;
    }
    view.pending = size;
    const wait = view.sent ? view.sentAt + VIEW_INTERVAL_MS - performance.now() : 0;
    if (wait <= 0) {
      this._flushView(mid, view);
      return;
    }
    if (view.timer) return;
    const v = view;
    view.timer = setTimeout(() => {
      v.timer = undefined;
      if (this._views.get(mid) === v) this._flushView(mid, v);
    }, wait);
  }

  /**
   * @private
   * @param {string} mid
   * @param {ViewState} view
   */
  _flushView(mid, view) {
    const size = view.pending;
    view.pending = null;
    if (this.closed || !size || !viewChanged(view.sent, size)) return;
    view.sent = size;
    view.sentAt = performance.now();
    this._opts.signal({ type: 'view', mid, width: size.width, height: size.height });
  }

  // ------------------------------------------------------------------ data

  /** @private */
  _wireOutbox() {
    const out = this.outbox;
    const to = (/** @type {string} */ transferId) => this._fileTargets.get(transferId) ?? SERVER_ID;
    out.on('open', () => this._sendState());
    out.on('file-progress', (e) => this.emit('file-progress', { peerId: to(e.transferId), ...e }));
    out.on('file-sent', (e) => {
      this.emit('file-sent', { peerId: to(e.transferId), ...e });
      this._fileTargets.delete(e.transferId);
    });
    out.on('file-error', (e) => {
      this.emit('file-error', { peerId: to(e.transferId), ...e });
      this._fileTargets.delete(e.transferId);
    });
  }

  /**
   * A channel the server opened: `<sender id>/switchboard` carries that participant's
   * messages.
   * @private
   * @param {RTCDataChannel} dc
   */
  _onDataChannel(dc) {
    const slash = dc.label.lastIndexOf('/');
    if (slash <= 0 || dc.label.slice(slash + 1) !== CHANNEL_LABEL) return;
    const peerId = dc.label.slice(0, slash);
    let inbox = this.inboxes.get(peerId);
    if (!inbox) {
      inbox = this._inbox(peerId);
      this.inboxes.set(peerId, inbox);
    }
    inbox.attach(dc);
    // Someone new (to this session) hears from us: tell them our mic/camera state.
    this._scheduleState(STATE_RESEND_MS);
  }

  /**
   * @private
   * @param {string} peerId
   * @returns {ChannelEndpoint}
   */
  _inbox(peerId) {
    const inbox = new ChannelEndpoint({ name: () => this._opts.nameOf(peerId), selfId: this._opts.selfId });
    inbox.on('chat', (e) => this.emit('chat', { peerId, ...e }));
    inbox.on('state', ({ mic, camera }) => {
      const before = this.remoteMedia.get(peerId);
      this.remoteMedia.set(peerId, { mic, camera });
      if (before?.mic !== mic || before?.camera !== camera) this.emit('media', { peerId, mic, camera });
    });
    inbox.on('file-progress', (e) => this.emit('file-progress', { peerId, ...e }));
    inbox.on('file', (e) => this.emit('file', { peerId, ...e }));
    inbox.on('file-error', (e) => this.emit('file-error', { peerId, ...e }));
    return inbox;
  }

  /**
   * Send our media state soon (coalescing requests).
   * @private
   * @param {number} delay
   */
  _scheduleState(delay) {
    if (this._stateTimer) return;
    this._stateTimer = setTimeout(() => {
      this._stateTimer = undefined;
      this._sendState();
    }, delay);
  }

  /** @private */
  _sendState() {
    if (this.closed) return;
    const local = this._opts.local();
    const self = this._opts.selfId();
    /** @type {Record<string, StreamKind>} */
    const streams = {};
    for (const { kind } of this._published.values()) streams[kind === 'screen' ? `${self}-screen` : self] = kind;
    this.outbox.sendIfOpen({ t: 'state', streams, mic: local.mic, camera: local.cam });
  }

  /** Tell everyone whether mic and camera are on. */
  localStateChanged() {
    this._sendState();
  }

  /** Whether our data channel to the server is open. */
  get channelOpen() {
    return this.outbox.open;
  }

  /**
   * Send a chat message to everyone (queued until our channel opens).
   * @param {string} text
   * @param {number} ts Unix milliseconds
   */
  sendChat(text, ts) {
    this.outbox.sendChat(text, ts);
  }

  /**
   * Send a file to everyone, or to one participant (the others skip it). Transfers run one
   * after another. Resolves when the last chunk is handed to our channel.
   * @param {File} file
   * @param {string} transferId
   * @param {string} [to]
   * @returns {Promise<void>}
   */
  sendFile(file, transferId, to) {
    this._fileTargets.set(transferId, to ?? SERVER_ID);
    return this.outbox.sendFile(file, transferId, to);
  }

  // ------------------------------------------------------------------ stats

  /**
   * Statistics of the connection to the server (named {@link SERVER_NAME}), with frames
   * decoded per remote stream in `streams`; rates are measured since the previous call.
   * @returns {Promise<PeerStats>}
   */
  async getStats() {
    const pc = this.pc;
    const report = await pc.getStats();
    const { stats, sample } = summarizeStats(report, pc === this.pc ? this._lastSample : null, {
      peerId: SERVER_ID,
      name: SERVER_NAME,
      connectionState: this.connectionState,
    });
    if (pc === this.pc) this._lastSample = sample;
    /** @type {Map<string, string>} */
    const trackOfMid = new Map();
    for (const t of pc.getTransceivers()) {
      if (t.mid !== null) trackOfMid.set(t.mid, t.receiver.track.id);
    }
    const byTrack = summarizeStreams(report, trackOfMid);
    stats.streams = [...this._remote.values()].map(({ stream, peerId, kind }) => {
      let framesDecoded = 0;
      /** @type {number | null} */
      let framesPerSecond = null;
      for (const track of stream.getVideoTracks()) {
        const s = byTrack.get(track.id);
        if (!s) continue;
        framesDecoded += s.framesDecoded;
        if (s.framesPerSecond !== null) framesPerSecond = (framesPerSecond ?? 0) + s.framesPerSecond;
      }
      return { peerId, name: this._opts.nameOf(peerId), kind, framesDecoded, framesPerSecond };
    });
    return stats;
  }

  /** Close the connection for good. Local tracks are not stopped (the owner owns them). */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.removeAllListeners();
    clearTimeout(this._retryTimer);
    clearTimeout(this._stateTimer);
    this._resizeObserver?.disconnect();
    this._resizeObserver = null;
    this._tiles.clear();
    if (typeof document !== 'undefined') document.removeEventListener('visibilitychange', this._onVisibility);
    this._teardown();
    this.outbox.close();
    for (const inbox of this.inboxes.values()) inbox.close();
    this.inboxes.clear();
  }
}
