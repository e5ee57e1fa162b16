// @ts-check
/**
 * Errors the SDK reports: server error codes from the signaling protocol, plus the SDK's
 * own codes, each with a message a person can act on.
 * @module
 */

/**
 * @typedef {import('./types.js').ServerErrorCode
 *   | 'connection_failed' | 'connection_closed' | 'unsupported_browser' | 'file_too_large'
 *   | 'no_peers' | 'no_relay'} ErrorCode
 */

/** @type {Record<string, string>} */
const FRIENDLY = {
  room_full: 'This room is full. Try again later or use another room code.',
  invalid_room: 'Room codes are 1–64 characters: letters, digits, "-", "_" and ".".',
  invalid_name: 'Names are 1–64 characters without control characters.',
  role_taken: 'This room already has a sender. Only one sender can broadcast per room.',
  unsupported_mode: 'This server does not offer the requested room mode.',
  media_failed: 'The media connection to the server failed.',
  invalid_sdp: 'The server could not use the media description this browser sent.',
  server_busy: 'The server is at capacity right now. Try again in a moment.',
  unsupported_version: 'This page is too old for the server. Reload the page.',
  already_joined: 'Already in a room on this connection.',
  rate_limited: 'Too many messages in a short time; some were dropped.',
  resume_failed: 'The previous session expired; joined again as a new participant.',
  connection_failed: 'Cannot reach the Switchboard server. Check your network and try again.',
  connection_closed: 'The connection to the server closed.',
  file_too_large: 'Files larger than 100 MB cannot be sent.',
  no_peers: 'Nobody is connected to receive it.',
  no_relay:
    'Relayed connections only were requested, but the server offers no TURN relay, so no call could connect.',
  unsupported_browser: 'This browser does not support WebRTC. Use a current Chrome, Edge, Firefox or Safari.',
};

/** An error with a machine-readable `code` (see {@link ErrorCode}). */
export class SwitchboardError extends Error {
  /**
   * @param {ErrorCode | string} code
   * @param {string} [message] defaults to a friendly text for the code
   */
  constructor(code, message) {
    super(message || FRIENDLY[code] || code);
    this.name = 'SwitchboardError';
    /** @type {ErrorCode | string} */
    this.code = code;
  }
}

/**
 * A sentence for a person, for a protocol or SDK error code. Falls back to `fallback`
 * (usually the server's message) for codes without a friendly text.
 * @param {string} code
 * @param {string} [fallback]
 * @returns {string}
 */
export function describeError(code, fallback) {
  return FRIENDLY[code] || fallback || code;
}
