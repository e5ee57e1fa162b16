// The classic WebRTC sender/receiver tutorial signaling server, reproduced as the baseline
// for bench/signal.sh. The only change from the tutorial: it listens on HOST (default
// 127.0.0.1) instead of every interface, so benchmarks stay on loopback.
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: process.env.HOST || '127.0.0.1', port: Number(process.env.PORT || 8080) });
let senderSocket = null; let receiverSocket = null;
wss.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data) => {
    const message = JSON.parse(data);
    if (message.type === 'sender') senderSocket = ws;
    else if (message.type === 'receiver') receiverSocket = ws;
    else if (message.type === 'createOffer') { if (ws !== senderSocket) return; receiverSocket?.send(JSON.stringify({ type: 'createOffer', sdp: message.sdp })); }
    else if (message.type === 'createAnswer') { if (ws !== receiverSocket) return; senderSocket?.send(JSON.stringify({ type: 'createAnswer', sdp: message.sdp })); }
    else if (message.type === 'iceCandidate') { if (ws === senderSocket) receiverSocket?.send(JSON.stringify({ type: 'iceCandidate', candidate: message.candidate })); else if (ws === receiverSocket) senderSocket?.send(JSON.stringify({ type: 'iceCandidate', candidate: message.candidate })); }
  });
});
