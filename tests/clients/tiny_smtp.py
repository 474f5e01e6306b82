"""tiny_smtp.py -- a minimal SMTP server on 127.0.0.1 that keeps what it receives (a helper for
tests/spec/socket_compat_spec.lua, not a test; aiosmtpd is not a dependency).

Usage: python3 tests/clients/tiny_smtp.py OUTFILE
It binds 127.0.0.1:0, prints the port on stdout (one line) when ready, speaks enough of RFC 5321
for LuaSocket's socket.smtp (EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT)
and, for each message, appends to OUTFILE: "FROM <addr>", one "TO <addr>" line per recipient,
"DATA", the message and a line "END". It runs until killed.
"""
import socketserver
import sys

OUTFILE = sys.argv[1]


class Handler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 tiny_smtp ready")
        sender, recipients = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            command = line.decode(errors="replace").rstrip("\r\n")
            verb = command[:4].upper()
            if verb == "EHLO":
                self.reply("250-tiny_smtp")
                self.reply("250 8BITMIME")
            elif verb == "HELO":
                self.reply("250 tiny_smtp")
            elif verb == "MAIL":
                sender, recipients = command[10:].strip(), []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command[8:].strip())
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while True:
                    data = self.rfile.readline()
                    if not data or data in (b".\r\n", b".\n"):
                        break
                    text = data.decode(errors="replace").rstrip("\r\n")
                    lines.append(text[1:] if text.startswith(".") else text)
                with open(OUTFILE, "a") as out:
                    out.write("FROM %s\n" % sender)
                    for rcpt in recipients:
                        out.write("TO %s\n" % rcpt)
                    out.write("DATA\n" + "\n".join(lines) + "\nEND\n")
                self.reply("250 OK queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
