// chat.js -- benchmark peer: a minimal Node.js `net` chat room (bench/run's chat workload). A new
// member gets "* welcome to the chat, guestN!", everyone else "* guestN joined", and every
// non-empty line a member sends is written to everyone else as "<guestN> line"; no commands and
// no leave announcements. A member with more than 256 KiB unsent is dropped, like
// examples/chat.lua's default max_queue. Prints "listening on HOST:PORT" on stderr; SIGTERM or
// SIGINT stop it.
// Usage: node bench/peers/chat.js [--listen HOST:PORT]
'use strict';
const net = require('net');

let listen = '127.0.0.1:0';
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === '--listen') listen = process.argv[++i];
  else throw new Error(`usage: node chat.js [--listen HOST:PORT]; got ${process.argv[i]}`);
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));

const MAX_QUEUE = 262144;
const members = new Set();
let guests = 0;

function broadcast(from, data) {
  for (const member of members) {
    if (member === from) continue;
    member.write(data);
    if (member.writableLength > MAX_QUEUE) member.destroy();
  }
}

const server = net.createServer({ noDelay: true }, (socket) => {
  const nick = `guest${++guests}`;
  const prefix = Buffer.from(`<${nick}> `);
  socket.write(`* welcome to the chat, ${nick}!\n`);
  broadcast(socket, `* ${nick} joined\n`);
  members.add(socket);
  let pending = null;
  socket.on('data', (chunk) => {
    const data = pending ? Buffer.concat([pending, chunk]) : chunk;
    let start = 0;
    let nl;
    while ((nl = data.indexOf(10, start)) !== -1) {
      if (nl > start) broadcast(socket, Buffer.concat([prefix, data.subarray(start, nl + 1)]));
      start = nl + 1;
    }
    pending = start < data.length ? Buffer.from(data.subarray(start)) : null;
  });
  socket.on('close', () => members.delete(socket));
  socket.on('error', () => socket.destroy());
});
server.listen({ host, port, backlog: 511 }, () => {
  process.stderr.write(`listening on ${host}:${server.address().port}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
