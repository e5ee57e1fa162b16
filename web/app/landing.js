// @ts-check
/**
 * Landing page: join or create a room by code (with `?mode=sfu` when "Route media through
 * the server" is ticked), start a random chat, open the broadcast pages.
 * @module
 */

import { isValidRoomName } from '../sdk/switchboard.js';
import { byId, initialName } from './common.js';

const roomForm = byId('room-form', HTMLFormElement);
const roomCode = byId('room-code', HTMLInputElement);
const roomError = byId('room-error', HTMLElement);
const createRoom = byId('create-room', HTMLButtonElement);
const sfuMode = byId('sfu-mode', HTMLInputElement);
const randomForm = byId('random-form', HTMLFormElement);
const randomName = byId('random-name', HTMLInputElement);

randomName.value = initialName();

/**
 * A random, easy-to-read room code like `abc-defg-hij`.
 * @returns {string}
 */
function newRoomCode() {
  const letters = 'abcdefghijkmnopqrstuvwxyz';
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  const pick = (/** @type {number} */ from, /** @type {number} */ to) =>
    [...bytes.slice(from, to)].map((b) => letters[b % letters.length]).join('');
  return `${pick(0, 3)}-${pick(3, 7)}-${pick(7, 10)}`;
}

/**
 * Accept a bare code or a pasted room link.
 * @param {string} raw
 * @returns {string}
 */
function normalizeCode(raw) {
  const text = raw.trim();
  const match = text.match(/\/r\/([^/?#]+)/);
  return match ? decodeURIComponent(match[1]) : text;
}

/**
 * The room page of `code`, asking for an SFU room when the box is ticked.
 * @param {string} code
 * @returns {string}
 */
function roomUrl(code) {
  return `/r/${encodeURIComponent(code)}${sfuMode.checked ? '?mode=sfu' : ''}`;
}

/** @param {string} message */
function showRoomError(message) {
  roomError.textContent = message;
  roomError.hidden = false;
  roomCode.setAttribute('aria-invalid', 'true');
  roomCode.focus();
}

roomCode.addEventListener('input', () => {
  roomError.hidden = true;
  roomCode.removeAttribute('aria-invalid');
});

roomForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const code = normalizeCode(roomCode.value);
  if (!code) {
    showRoomError('Enter a room code, or create a new room.');
    return;
  }
  if (!isValidRoomName(code)) {
    showRoomError('Room codes are 1–64 characters: letters, digits, "-", "_" and ".".');
    return;
  }
  location.assign(roomUrl(code));
});

createRoom.addEventListener('click', () => {
  location.assign(roomUrl(newRoomCode()));
});

randomForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = randomName.value.trim();
  location.assign(name ? `/random?name=${encodeURIComponent(name)}` : '/random');
});
