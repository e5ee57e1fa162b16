// @ts-check
/**
 * Switchboard browser SDK — the entry point. Plain ES modules, no dependencies, no build:
 *
 * ```js
 * import { getLocalMedia, joinRoom } from '/sdk/switchboard.js';
 * const { stream } = await getLocalMedia({ audio: true, video: true });
 * const room = await joinRoom({ room: 'standup', name: 'Ann', localStream: stream });
 * room.on('stream', ({ peerId, name, stream, kind }) => { … show it … });
 * room.on('stream-removed', ({ peerId, kind }) => { … remove it … });
 * room.sendChat('hello');
 * ```
 *
 * - {@link joinRoom} / {@link Room}: rooms of peers (full mesh) or one sender and many
 *   receivers, over peer-to-peer connections with perfect negotiation, trickle ICE and
 *   ICE restarts ({@link PeerLink}); or, in SFU rooms (`mode: 'sfu'`), over one
 *   connection to the server that forwards everyone's media ({@link ServerLink}, with
 *   simulcast). Chat, file transfer, screen sharing and stats work the same in both.
 * - {@link joinRandom} / {@link RandomSession}: random 1:1 pairing with Next.
 * - {@link getLocalMedia}: camera/microphone with clear errors and audio-only fallback.
 * - {@link Signaling}: the raw protocol client (docs/protocol.md), should you need it.
 * @module
 */

export { Emitter } from './emitter.js';
export { SwitchboardError, describeError } from './errors.js';
export { checkIceTransportPolicy, fetchIceServers, offersRelay, sanitizeIceServers } from './ice.js';
export { MediaAccessError, getLocalMedia, getScreenMedia, stopStream, toMediaError } from './media.js';
export { ChannelEndpoint, FILE_CHUNK_SIZE, MAX_FILE_SIZE } from './channel.js';
export { PeerLink } from './peer.js';
export { RandomSession, joinRandom } from './random.js';
export { Room, connectsTo, joinRoom } from './room.js';
export { SERVER_ID, ServerLink, parseStreamId } from './server-link.js';
export { Signaling, defaultSignalingUrl } from './signaling.js';
export { formatBitrate, formatPeerStats, formatStreamStats, summarizeStats, summarizeStreams } from './stats.js';

/** Protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;

/** Valid room names: 1–64 of `A-Z a-z 0-9 - _ .`. */
export const ROOM_NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * Whether `name` is a valid room name.
 * @param {string} name
 * @returns {boolean}
 */
export function isValidRoomName(name) {
  return ROOM_NAME_PATTERN.test(name);
}

/**
 * Whether `name` is a valid display name (1–64 characters after trimming, no control
 * characters).
 * @param {string} name
 * @returns {boolean}
 */
export function isValidDisplayName(name) {
  const trimmed = name.trim();
  // eslint-disable-next-line no-control-regex
  return [...trimmed].length >= 1 && [...trimmed].length <= 64 && !/[\u0000-\u001f\u007f-\u009f]/.test(trimmed);
}
