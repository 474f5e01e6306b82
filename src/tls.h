/* tls.h -- TLS with OpenSSL: the contexts, and the handshake, reads and writes of one
 * connection's SSL object on its non-blocking socket.
 *
 * No Lua and no event loop here: conn.c drives a connection's SSL from its watchers (a call that
 * would block says which way it waits), and ltls.c builds contexts from Lua tables. */
#ifndef TLS_H
#define TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

enum tls_status { TLS_OK, TLS_WANT_READ, TLS_WANT_WRITE, TLS_CLOSED, TLS_FAILED };

/* A connection's TLS state, allocated beside it: plaintext connections carry only a NULL. The
 * error text outlives the SSL, as the connection's close reason. */
struct conn_tls {
    SSL *ssl;            /* freed when the socket closes */
    bool handshaking;
    bool secured;        /* the handshake completed: reads and writes go through ssl */
    bool broken;         /* a fatal error: no close_notify (OpenSSL forbids it after one) */
    bool notified;       /* close_notify sent */
    bool accepting;      /* the handshake of an accepted connection: no handler runs yet */
    bool read_wants_write, write_wants_read; /* a record layer call waits the other way */
    size_t plain_left;   /* starttls: queued bytes to send in plaintext before the handshake */
    char error[160];     /* "tls: wrong version number", "certificate verify failed: ..." */
};

/* Once per process, before any context and before forking workers: the session ticket keys,
 * shared by every server context of the process tree, so that a ticket issued before a reload
 * or by another worker still resumes. */
int tls_init(void);

/* The options every context of ours has: buffers released while idle, partial writes, no
 * renegotiation, read-ahead (one recv per batch of records). server: also the shared ticket
 * keys and a session id context. */
void tls_tune_context(SSL_CTX *ctx, bool server);

/* A new SSL on fd, in client or server mode; NULL when out of memory. */
SSL *tls_new(SSL_CTX *ctx, int fd, bool server);

/* Each returns TLS_OK, a want (retry once the socket is ready that way), TLS_CLOSED (the peer
 * ended the stream: close_notify, or a FIN) or TLS_FAILED with t->error set. */
enum tls_status tls_handshake(struct conn_tls *t);
enum tls_status tls_read(struct conn_tls *t, char *buf, size_t len, size_t *got);
enum tls_status tls_write(struct conn_tls *t, const char *buf, size_t len, size_t *wrote);

/* Whether OpenSSL holds bytes it read from the socket and has not handed out yet. */
bool tls_pending(struct conn_tls *t);

/* Sends close_notify once, if the stream is sound (it may not fit the socket: then none). */
void tls_close_notify(struct conn_tls *t);

/* Puts OpenSSL's last error (and for a failed certificate check, its reason) in out after
 * prefix (TLS_FAILED's text); "what: reason" for the errors of loading files. */
void tls_error_text(char *out, size_t size, const char *prefix, SSL *ssl);

#endif
