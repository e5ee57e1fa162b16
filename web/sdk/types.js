// @ts-check
/**
 * Wire types of the Switchboard signaling protocol v1 (`/ws`), as JSDoc typedefs.
 * See docs/protocol.md for the meaning of every message and field. This module has no
 * runtime code; import the types with `import('./types.js').Name`.
 * @module
 */

/** @typedef {'peer' | 'sender' | 'receiver'} Role */
/** @typedef {'p2p' | 'sfu'} Mode */
/** @typedef {'left' | 'disconnected' | 'next'} LeaveReason */

/**
 * A participant as others see it.
 * @typedef {object} Participant
 * @property {string} id opaque id, unique within one server run
 * @property {string} name display name
 * @property {Role} role
 * @property {number} since Unix milliseconds when it joined
 */

/**
 * @typedef {'bad_json' | 'unknown_type' | 'invalid_message' | 'unsupported_version'
 *   | 'message_too_large' | 'rate_limited' | 'not_in_room' | 'already_joined' | 'room_full'
 *   | 'invalid_room' | 'invalid_name' | 'unknown_participant' | 'unsupported_mode'
 *   | 'role_taken' | 'not_matched' | 'server_busy' | 'resume_failed' | 'invalid_sdp'
 *   | 'media_failed'} ServerErrorCode
 */

/**
 * What a published m-line carries, in an SFU offer's `tracks` (by `mid`).
 * @typedef {'microphone' | 'camera' | 'screen' | 'screen-audio'} TrackSource
 */

/**
 * Messages a client sends. `tracks` goes with an offer to the server (`to: 'sfu'`) in SFU
 * rooms.
 * @typedef {{ type: 'join', v: 1, room: string, name: string, role?: Role, mode?: Mode, resume?: string }
 *   | { type: 'leave' }
 *   | { type: 'offer', to: string, sdp: string, tracks?: Record<string, TrackSource> }
 *   | { type: 'answer', to: string, sdp: string }
 *   | { type: 'candidate', to: string, candidate: RTCIceCandidateInit | null }
 *   | { type: 'ice-restart', to: string }
 *   | { type: 'random', v: 1, name: string }
 *   | { type: 'next' }
 *   | { type: 'view', mid: string, width: number, height: number }
 *   | { type: 'ping', id?: number }} ClientMessage
 */

/**
 * Messages the server sends.
 * @typedef {{ type: 'joined', v: number, room: string, id: string, resume: string, mode: Mode, role: Role, participants: Participant[], resumed: boolean }
 *   | { type: 'participant-joined', participant: Participant }
 *   | { type: 'participant-left', id: string, reason: LeaveReason }
 *   | { type: 'left' }
 *   | { type: 'offer', from: string, sdp: string }
 *   | { type: 'answer', from: string, sdp: string }
 *   | { type: 'candidate', from: string, candidate: RTCIceCandidateInit | null }
 *   | { type: 'ice-restart', from: string }
 *   | { type: 'waiting' }
 *   | { type: 'matched', room: string, id: string, peer: Participant, polite: boolean }
 *   | { type: 'unmatched', reason: LeaveReason }
 *   | { type: 'pong', id?: number }
 *   | { type: 'dominant-speaker', id: string }
 *   | { type: 'mode-changed', mode: Mode }
 *   | { type: 'error', code: ServerErrorCode, message: string }} ServerMessage
 */

/** The server messages a peer connection consumes. */
/** @typedef {Extract<ServerMessage, { type: 'offer' | 'answer' | 'candidate' | 'ice-restart' }>} PeerSignal */

/** What a remote stream carries. */
/** @typedef {'camera' | 'screen'} StreamKind */

export {};
