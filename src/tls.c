/* tls.c -- TLS contexts and records on non-blocking sockets; see tls.h.
 *
 * Every call starts with an empty OpenSSL error queue (SSL_get_error reads it) and leaves one,
 * so that an error of one connection is never reported as another's. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "tls.h"

/* SSL_CTX_set_tlsext_ticket_keys: 16 bytes of key name, 32 of HMAC key, 32 of AES key. */
static unsigned char ticket_keys[80];

int tls_init(void)
{
    return RAND_bytes(ticket_keys, sizeof ticket_keys) == 1 ? 0 : -1;
}

void tls_tune_context(SSL_CTX *ctx, bool server)
{
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A peer that closes without close_notify ends the stream as a FIN does in plaintext: the
     * handler sees "closed", as it would without TLS. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_read_ahead(ctx, 1);
    if (server) {
        SSL_CTX_set_tlsext_ticket_keys(ctx, ticket_keys, sizeof ticket_keys);
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"luasock", 7);
    }
}

SSL *tls_new(SSL_CTX *ctx, int fd, bool server)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    SSL_set_fd(ssl, fd);
    if (server)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    return ssl;
}

void tls_error_text(char *out, size_t size, const char *prefix, SSL *ssl)
{
    unsigned long e = ERR_peek_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
    if (ssl != NULL && ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        snprintf(out, size, "certificate verify failed: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
    } else {
        snprintf(out, size, "%s%s", prefix, reason != NULL ? reason : "unknown error");
    }
    ERR_clear_error();
}

/* What a failed call means; ret is its return value. */
static enum tls_status status_of(struct conn_tls *t, int ret)
{
    int saved_errno = errno;
    switch (SSL_get_error(t->ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        t->broken = true;
        ERR_clear_error();
        if (saved_errno == 0)
            return TLS_CLOSED;
        snprintf(t->error, sizeof t->error, "%s", errors_string(saved_errno));
        return TLS_FAILED;
    default:
        t->broken = true;
        tls_error_text(t->error, sizeof t->error, "tls: ", t->ssl);
        return TLS_FAILED;
    }
}

enum tls_status tls_handshake(struct conn_tls *t)
{
    ERR_clear_error();
    int ret = SSL_do_handshake(t->ssl);
    if (ret == 1)
        return TLS_OK;
    enum tls_status status = status_of(t, ret);
    if (status == TLS_CLOSED) {
        t->broken = true;
        snprintf(t->error, sizeof t->error, "tls: the peer closed the connection during the "
                                            "handshake");
        return TLS_FAILED;
    }
    return status;
}

enum tls_status tls_read(struct conn_tls *t, char *buf, size_t len, size_t *got)
{
    ERR_clear_error();
    if (SSL_read_ex(t->ssl, buf, len, got) == 1)
        return TLS_OK;
    return status_of(t, 0);
}

enum tls_status tls_write(struct conn_tls *t, const char *buf, size_t len, size_t *wrote)
{
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, buf, len, wrote) == 1)
        return TLS_OK;
    return status_of(t, 0);
}

bool tls_pending(struct conn_tls *t)
{
    return SSL_has_pending(t->ssl) == 1;
}

void tls_close_notify(struct conn_tls *t)
{
    if (t->notified || t->broken || !t->secured)
        return;
    t->notified = true;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
}
