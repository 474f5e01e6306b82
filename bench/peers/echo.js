// echo.js -- benchmark peer: a Node.js `net` echo server (bench/run). Writes every chunk back;
// with --line, splits the input into lines and writes each line back with its newline.
// Prints "listening on HOST:PORT" on stderr; SIGTERM or SIGINT stop it.
// Usage: node bench/peers/echo.js [--listen HOST:PORT] [--line]
'use strict';
const net = require('net');

let listen = '127.0.0.1:0';
let lineMode = false;
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === '--listen') listen = process.argv[++i];
  else if (process.argv[i] === '--line') lineMode = true;
  else throw new Error(`usage: node echo.js [--listen HOST:PORT] [--line]; got ${process.argv[i]}`);
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));

// Pauses reading while the socket's write buffer is over its high-water mark.
function write(socket, data) {
  if (!socket.write(data)) {
    socket.pause();
    socket.once('drain', () => socket.resume());
  }
}

function echoBytes(socket) {
  socket.on('data', (chunk) => write(socket, chunk));
}

function echoLines(socket) {
  let pending = null;
  socket.on('data', (chunk) => {
    const data = pending ? Buffer.concat([pending, chunk]) : chunk;
    let start = 0;
    let nl;
    while ((nl = data.indexOf(10, start)) !== -1) {
      write(socket, data.subarray(start, nl + 1));
      start = nl + 1;
    }
    pending = start < data.length ? Buffer.from(data.subarray(start)) : null;
  });
}

const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on('error', () => socket.destroy());
  (lineMode ? echoLines : echoBytes)(socket);
});
server.listen({ host, port, backlog: 511 }, () => {
  process.stderr.write(`listening on ${host}:${server.address().port}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
