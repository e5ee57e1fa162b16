// The tutorial server (tutorial-server.js) extended to rooms, as the baseline for the room
// scenarios of bench/signal.sh. It speaks the subset of Switchboard protocol v1 (`/ws`) that
// the load uses, in the tutorial's plain style: one Map of rooms, JSON.parse and
// JSON.stringify per message, ws.send to deliver.
//
//   join      -> joined {v, room, id, resume, mode, role, participants, resumed}, and
//                participant-joined to the others
//   offer / answer / candidate {to} -> relayed to `to` with `from`
//   leave     -> left, and participant-left {reason: "left"} to the others
//   ping      -> pong
//   a closed socket leaves with reason "disconnected" (no resume grace)
//
// Rooms hold at most 8 participants, like Switchboard's default. No rate limiting (the
// Switchboard side runs with --rate-limit 0 too).
const crypto = require('crypto');
const { WebSocketServer } = require('ws');

const MAX_PARTICIPANTS = 8;
const wss = new WebSocketServer({
  host: process.env.HOST || '127.0.0.1',
  port: Number(process.env.PORT || 8080),
  path: '/ws',
});
const rooms = new Map(); // room name -> Map(participant id -> client), in join order

function send(ws, message) {
  ws.send(JSON.stringify(message));
}

function error(ws, code, message) {
  send(ws, { type: 'error', code, message });
}

function broadcast(room, message) {
  const text = JSON.stringify(message);
  for (const other of room.values()) other.ws.send(text);
}

function leave(client, reason) {
  const name = client.room;
  client.room = null;
  const room = rooms.get(name);
  if (!room) return;
  room.delete(client.id);
  if (room.size === 0) rooms.delete(name);
  else broadcast(room, { type: 'participant-left', id: client.id, reason });
}

wss.on('connection', (ws) => {
  const client = { ws, id: null, room: null, info: null };
  ws.on('error', console.error);
  ws.on('message', (data) => {
    let message;
    try {
      message = JSON.parse(data);
    } catch (e) {
      return error(ws, 'bad_json', 'not valid JSON');
    }
    switch (message.type) {
      case 'join': {
        if (client.room) return error(ws, 'already_joined', 'already in a room; send leave first');
        if (typeof message.room !== 'string' || typeof message.name !== 'string') {
          return error(ws, 'invalid_message', 'join needs room and name');
        }
        let room = rooms.get(message.room);
        if (!room) {
          room = new Map();
          rooms.set(message.room, room);
        }
        if (room.size >= MAX_PARTICIPANTS) return error(ws, 'room_full', 'room is full');
        const id = crypto.randomBytes(5).toString('hex');
        client.info = { id, name: message.name, role: 'peer', since: Date.now() };
        broadcast(room, { type: 'participant-joined', participant: client.info });
        send(ws, {
          type: 'joined',
          v: 1,
          room: message.room,
          id,
          resume: crypto.randomBytes(16).toString('hex'),
          mode: 'p2p',
          role: 'peer',
          participants: [...room.values()].map((c) => c.info),
          resumed: false,
        });
        client.id = id;
        client.room = message.room;
        room.set(id, client);
        break;
      }
      case 'offer':
      case 'answer':
      case 'candidate': {
        if (!client.room) return error(ws, 'not_in_room', 'join a room before sending to participants');
        const target = rooms.get(client.room).get(message.to);
        if (!target || target === client) return error(ws, 'unknown_participant', 'no such participant in this room');
        if (message.type === 'candidate') send(target.ws, { type: 'candidate', from: client.id, candidate: message.candidate });
        else send(target.ws, { type: message.type, from: client.id, sdp: message.sdp });
        break;
      }
      case 'leave':
        if (!client.room) return error(ws, 'not_in_room', 'not in a room');
        leave(client, 'left');
        send(ws, { type: 'left' });
        break;
      case 'ping':
        send(ws, { type: 'pong', id: message.id });
        break;
      default:
        error(ws, 'unknown_type', 'unknown message type');
    }
  });
  ws.on('close', () => {
    if (client.room) leave(client, 'disconnected');
  });
});
