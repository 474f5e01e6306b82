// tls_echo.js -- benchmark peer: a Node.js `tls` echo server (bench/run's TLS workloads). Writes
// every decrypted chunk back. Node's defaults otherwise: TLS 1.2 and 1.3, session tickets on
// (keys made at start), so TLS 1.3 clients can resume.
// Prints "listening on HOST:PORT" on stderr; SIGTERM or SIGINT stop it.
// Usage: node bench/peers/tls_echo.js --cert FILE --key FILE [--listen HOST:PORT]
'use strict';
const fs = require('fs');
const tls = require('tls');

let listen = '127.0.0.1:0';
let cert = null;
let key = null;
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === '--listen') listen = process.argv[++i];
  else if (process.argv[i] === '--cert') cert = process.argv[++i];
  else if (process.argv[i] === '--key') key = process.argv[++i];
  else throw new Error(`usage: node tls_echo.js --cert FILE --key FILE [--listen HOST:PORT]; ` +
                       `got ${process.argv[i]}`);
}
if (!cert || !key) throw new Error('usage: node tls_echo.js --cert FILE --key FILE [--listen HOST:PORT]');
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));

const server = tls.createServer({
  cert: fs.readFileSync(cert),
  key: fs.readFileSync(key),
  noDelay: true,
}, (socket) => {
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk) => {
    // Pauses reading while the socket's write buffer is over its high-water mark.
    if (!socket.write(chunk)) {
      socket.pause();
      socket.once('drain', () => socket.resume());
    }
  });
});
// A failed handshake is the client's business: Node would otherwise only emit this event.
server.on('tlsClientError', () => {});
server.listen({ host, port, backlog: 511 }, () => {
  process.stderr.write(`listening on ${host}:${server.address().port}\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
