/* server.h -- what `luasock serve` and `luasock check` do once the command line is parsed. */
#ifndef SERVER_H
#define SERVER_H

#include <stdbool.h>
#include <stddef.h>

struct serve_options {
    const char *script;
    const char **listen; /* overrides the script's listen addresses when count > 0 */
    size_t listen_count;
    size_t max_connections; /* 0: no limit */
    size_t max_per_ip;      /* open connections from one client address; 0: no limit */
    int ipv6_prefix;        /* max_per_ip counts IPv6 clients per network of these bits */
    bool watch;             /* reload when the script or its own modules change */
    const char *pid_file;   /* written at start, removed at exit; NULL for none */
    double grace;           /* seconds handlers may run on after SIGTERM/SIGINT */
    int workers;            /* processes that serve; above 1, a parent supervises them */
    double watchdog;        /* with workers: restart one whose loop is stuck this long; 0: off */
    const char *pubsub;     /* luasock.pubsub's backend: "redis://host:port/db"; NULL: in-process */
    const char *tls_cert, *tls_key; /* --tls-cert, --tls-key; NULL: the script's */
    const char *log_file;   /* --log-file: append the log there; NULL: stderr */
    bool access_log;        /* --access-log: a line per closed connection, whatever the script */
    const char *metrics;    /* --metrics HOST:PORT; NULL: the script's metrics setting, if any */
};

/* Both return the process exit status. */
int server_check(char *const scripts[], int count);
int server_serve(const struct serve_options *options);

/* `luasock run SCRIPT ARGS...`: runs the script as the main coroutine. */
int server_run(const char *script, int argc, char **argv);

#endif
