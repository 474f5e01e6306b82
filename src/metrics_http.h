/* metrics_http.h -- the --metrics endpoint: GET /metrics (Prometheus text) and GET /healthz.
 *
 * A listener of its own with a minimal HTTP/1.0-1.1 request reader in C: a request must arrive
 * whole within METRICS_HTTP_TIMEOUT seconds and METRICS_HTTP_MAX_REQUEST bytes, gets one answer
 * and the connection is closed. It never runs Lua and is not one of the handlers' connections
 * (not in --max-connections, not in the connection metrics). */
#ifndef METRICS_HTTP_H
#define METRICS_HTTP_H

#include <ev.h>
#include <stddef.h>
#include <stdio.h>

#define METRICS_HTTP_TIMEOUT 5.0
#define METRICS_HTTP_MAX_REQUEST 4096
#define METRICS_HTTP_MAX_CLIENTS 16

/* Listens on text ("HOST:PORT"); writes the bound address to name. /metrics answers with what
 * write puts in its stream. Returns 0, or -1 with "metrics TEXT: cause" in err. */
int metrics_http_open(struct ev_loop *loop, const char *text, void (*write)(FILE *out),
                      char *name, size_t name_size, char *err, size_t err_size);

/* Stops listening and drops the clients being answered. */
void metrics_http_close(void);

#endif
