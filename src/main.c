/* main.c -- the command line: luasock serve | run | check | --help | --version. */
#include <ctype.h>
#include <ev.h>
#include <lua.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "luasock.h"
#include "net.h"
#include "peers.h"
#include "server.h"

#define USAGE_ERROR 2

static const char usage[] =
    "Usage: luasock serve [options] SCRIPT   run SCRIPT's handlers as a server\n"
    "       luasock run SCRIPT [ARGS...]     run SCRIPT as a client program (exits when it returns)\n"
    "       luasock check SCRIPT...          load each SCRIPT as serve would, without serving\n"
    "       luasock --help | --version\n"
    "\n"
    "Run 'luasock serve --help' for the server's options. The handler API is in docs/api.md.\n";

static const char serve_usage[] =
    "Usage: luasock serve [options] SCRIPT\n"
    "\n"
    "Runs SCRIPT's handle(conn) in a coroutine for every accepted connection.\n"
    "\n"
    "Options:\n"
    "  --listen ADDR          HOST:PORT, [IPv6]:PORT, *:PORT or unix:/path, each also\n"
    "                         after tls: (TLS; see --tls-cert); repeatable;\n"
    "                         replaces the script's 'listen' (port 0 picks a free port)\n"
    "  --max-connections N    close connections beyond N open ones at once (default: none)\n"
    "  --max-connections-per-ip N\n"
    "                         the same, counting the connections from each client address\n"
    "                         (IPv4) or network (IPv6, see --ipv6-prefix)\n"
    "  --ipv6-prefix BITS     IPv6 clients count per network of BITS leading bits, 1 to 128\n"
    "                         (default 64: a host usually holds a whole /64)\n"
    "  --log-level LEVEL      debug, info (default), warn or error\n"
    "  --log-format FORMAT    text (default) or json: one JSON object per line\n"
    "  --log-file PATH        append the log to PATH instead of stderr; SIGUSR1 reopens it\n"
    "  --access-log           log every closed connection at info (as access_log = true)\n"
    "  --metrics HOST:PORT    serve Prometheus metrics on GET /metrics and ok on GET /healthz\n"
    "                         (as metrics = \"HOST:PORT\" in the script; port 0 picks one)\n"
    "  --grace SECONDS        on SIGTERM/SIGINT, let handlers finish for up to SECONDS\n"
    "                         (default 10); a second signal exits at once\n"
    "  --pid-file PATH        write the server's pid to PATH (refused if PATH names a live\n"
    "                         process); removed at exit\n"
    "  --watch                reload SCRIPT when it or a module beside it changes\n"
    "                         (SIGHUP reloads at any time)\n"
    "  --pubsub URL           luasock.pubsub through Redis, so that workers and other nodes\n"
    "                         share channels (default: in-process). URL:\n"
    "                         redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]\n"
    "  --tls-cert FILE        the certificate (chain) for tls: listeners, with --tls-key;\n"
    "                         replaces the script's tls.cert and tls.key\n"
    "  --tls-key FILE         its private key\n"
    "  --workers N|auto       serve from N processes (auto: one per core), restarted when\n"
    "                         they die; SIGHUP and SIGTERM to the parent reach them all\n"
    "  --watchdog SECONDS     with --workers: kill and restart a worker whose loop has not\n"
    "                         turned for SECONDS (stuck in one C call); default: off\n"
    "  --help                 show this help\n";

static int usage_error(const char *help_command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const char *help_command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "luasock: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '%s --help'.\n", help_command);
    va_end(ap);
    return USAGE_ERROR;
}

/* Returns the value of "--name VALUE" or "--name=VALUE" at argv[*i], or NULL if argv[*i] is
 * another option. Sets *missing when the value is absent. */
static const char *option_value(int argc, char **argv, int *i, const char *name, int *missing)
{
    size_t len = strlen(name);
    const char *arg = argv[*i];
    if (strncmp(arg, name, len) != 0)
        return NULL;
    if (arg[len] == '=')
        return arg + len + 1;
    if (arg[len] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

static int parse_count(const char *text, size_t *out)
{
    char *end;
    long long value = strtoll(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value < 1)
        return -1;
    *out = (size_t)value;
    return 0;
}

/* USER:PASSWORD, percent-encoded or not: a colon, and no stray '%'. */
static bool redis_userinfo(const char *text, const char *end)
{
    if (memchr(text, ':', (size_t)(end - text)) == NULL)
        return false;
    for (const char *p = text; p < end; p++)
        if (*p == '%' && (end - p < 3 || !isxdigit((unsigned char)p[1]) ||
                          !isxdigit((unsigned char)p[2])))
            return false;
    return true;
}

/* rediss:// options: insecure=0|1 and ca=FILE, joined by '&'. */
static bool rediss_options(const char *text)
{
    for (;;) {
        size_t len = strcspn(text, "&");
        bool known = (len == 10 && (strncmp(text, "insecure=0", 10) == 0 ||
                                    strncmp(text, "insecure=1", 10) == 0)) ||
                     (len > 3 && strncmp(text, "ca=", 3) == 0);
        if (!known)
            return false;
        if (text[len] == '\0')
            return true;
        text += len + 1;
    }
}

/* redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTIONS], checked here so that a typo is a
 * usage error at once, not a failure when the script first publishes. The password may hold any
 * character but '@' in its raw form: the last '@' ends it. */
static bool redis_url(const char *text)
{
    size_t scheme = strncmp(text, "redis://", 8) == 0 ? 8 : strncmp(text, "rediss://", 9) == 0 ? 9 : 0;
    if (scheme == 0)
        return false;
    const char *host = text + scheme, *at = strrchr(host, '@');
    if (at != NULL) {
        if (!redis_userinfo(host, at))
            return false;
        host = at + 1;
    }
    const char *end = host + strcspn(host, ":/?");
    if (end == host)
        return false;
    if (*end == ':') {
        size_t digits = strspn(end + 1, "0123456789");
        if (digits == 0 || digits > 5 || atoi(end + 1) > 65535)
            return false;
        end += 1 + digits;
    }
    if (*end == '/')
        end += 1 + strspn(end + 1, "0123456789");
    if (end[-1] == '/')
        return false;
    return *end == '\0' || (*end == '?' && scheme == 9 && rediss_options(end + 1));
}

#define MAX_WORKERS 1024

static int parse_workers(const char *text, int *out)
{
    size_t count;
    if (strcmp(text, "auto") == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        *out = cores > 0 ? (int)(cores < MAX_WORKERS ? cores : MAX_WORKERS) : 1;
        return 0;
    }
    if (parse_count(text, &count) < 0 || count > MAX_WORKERS)
        return -1;
    *out = (int)count;
    return 0;
}

static int serve_command(int argc, char **argv)
{
    const char *help = "luasock serve";
    struct serve_options o = {.grace = 10, .ipv6_prefix = PEERS_DEFAULT_IPV6_PREFIX};
    o.listen = calloc((size_t)argc, sizeof *o.listen);
    if (o.listen == NULL)
        return 1;
    int status = -1;
    for (int i = 2; i < argc && status < 0; i++) {
        const char *arg = argv[i], *value;
        int missing = 0;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(serve_usage, stdout);
            status = 0;
        } else if (strcmp(arg, "--watch") == 0) {
            o.watch = true;
        } else if (strcmp(arg, "--access-log") == 0) {
            o.access_log = true;
        } else if ((value = option_value(argc, argv, &i, "--log-format", &missing)) != NULL) {
            if (strcmp(value, "json") != 0 && strcmp(value, "text") != 0)
                status = usage_error(help, "--log-format: expected text or json, got '%s'", value);
            log_set_json(strcmp(value, "json") == 0);
        } else if ((value = option_value(argc, argv, &i, "--log-file", &missing)) != NULL) {
            o.log_file = value;
        } else if ((value = option_value(argc, argv, &i, "--metrics", &missing)) != NULL) {
            struct net_addr addr;
            char err[512];
            if (net_check_listen(value, &addr, err, sizeof err) < 0)
                status = usage_error(help, "--metrics: %s", err);
            o.metrics = value;
        } else if ((value = option_value(argc, argv, &i, "--listen", &missing)) != NULL) {
            struct net_addr addr;
            char err[512];
            if (net_check_listen(value, &addr, err, sizeof err) < 0)
                status = usage_error(help, "%s", err);
            o.listen[o.listen_count++] = value;
        } else if ((value = option_value(argc, argv, &i, "--max-connections-per-ip", &missing))) {
            if (parse_count(value, &o.max_per_ip) < 0)
                status = usage_error(help, "--max-connections-per-ip: expected a positive "
                                           "integer, got '%s'", value);
        } else if ((value = option_value(argc, argv, &i, "--ipv6-prefix", &missing))) {
            size_t bits;
            if (parse_count(value, &bits) < 0 || bits > 128)
                status = usage_error(help, "--ipv6-prefix: expected bits from 1 to 128, got "
                                           "'%s'", value);
            else
                o.ipv6_prefix = (int)bits;
        } else if ((value = option_value(argc, argv, &i, "--max-connections", &missing))) {
            if (parse_count(value, &o.max_connections) < 0)
                status = usage_error(help, "--max-connections: expected a positive integer, "
                                           "got '%s'", value);
        } else if ((value = option_value(argc, argv, &i, "--grace", &missing)) != NULL) {
            char *end;
            o.grace = strtod(value, &end);
            if (*value == '\0' || *end != '\0' || !(o.grace >= 0))
                status = usage_error(help, "--grace: expected seconds (0 or more), got '%s'",
                                     value);
        } else if ((value = option_value(argc, argv, &i, "--watchdog", &missing)) != NULL) {
            char *end;
            o.watchdog = strtod(value, &end);
            if (*value == '\0' || *end != '\0' || !(o.watchdog > 0 && o.watchdog <= 86400))
                status = usage_error(help, "--watchdog: expected seconds (more than 0, at most "
                                           "86400), got '%s'", value);
        } else if ((value = option_value(argc, argv, &i, "--workers", &missing)) != NULL) {
            if (parse_workers(value, &o.workers) < 0)
                status = usage_error(help, "--workers: expected a number from 1 to %d or "
                                           "'auto', got '%s'", MAX_WORKERS, value);
        } else if ((value = option_value(argc, argv, &i, "--tls-cert", &missing)) != NULL) {
            o.tls_cert = value;
        } else if ((value = option_value(argc, argv, &i, "--tls-key", &missing)) != NULL) {
            o.tls_key = value;
        } else if ((value = option_value(argc, argv, &i, "--pubsub", &missing)) != NULL) {
            if (!redis_url(value)) {
                /* Whatever is wrong with it, the password is not repeated. */
                const char *at = strrchr(value, '@'), *scheme = strstr(value, "://");
                int kept = at != NULL && scheme != NULL && scheme < at ? (int)(scheme + 3 - value)
                                                                       : 0;
                status = usage_error(help, "--pubsub: expected redis[s]://[[USER]:PASSWORD@]"
                                           "HOST[:PORT][/DB] (rediss: [?ca=FILE|insecure=1]), "
                                           "got '%.*s%s%s'", kept, value,
                                     at ? "***@" : "", at ? at + 1 : value);
            }
            o.pubsub = value;
        } else if ((value = option_value(argc, argv, &i, "--pid-file", &missing)) != NULL) {
            o.pid_file = value;
        } else if ((value = option_value(argc, argv, &i, "--log-level", &missing)) != NULL) {
            int level = log_level_from_name(value);
            if (level < 0)
                status = usage_error(help, "--log-level: expected debug, info, warn or error, "
                                           "got '%s'", value);
            else
                log_set_level((enum luasock_log_level)level);
        } else if (missing) {
            status = usage_error(help, "option '%s' needs a value", arg);
        } else if (arg[0] == '-' && arg[1] != '\0') {
            status = usage_error(help, "unknown option '%s'", arg);
        } else if (o.script != NULL) {
            status = usage_error(help, "unexpected argument '%s': give one SCRIPT", arg);
        } else {
            o.script = arg;
        }
    }
    if (status < 0 && o.script == NULL)
        status = usage_error(help, "serve: missing SCRIPT");
    if (status < 0 && (o.tls_cert == NULL) != (o.tls_key == NULL))
        status = usage_error(help, "--tls-cert and --tls-key go together");
    if (status < 0 && o.watchdog > 0 && o.workers < 2)
        status = usage_error(help, "--watchdog needs --workers N with N of 2 or more: a single "
                                   "process has no parent to restart it");
    if (status < 0)
        status = server_serve(&o);
    free(o.listen);
    return status;
}

static int check_command(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[2], "--help") == 0) {
        fputs("Usage: luasock check SCRIPT...\n\nLoads each SCRIPT and runs its start hook as "
              "serve would, without listening. Prints 'SCRIPT: ok' for each good one, and the "
              "errors as FILE:LINE: message; exits with status 1 if any fails.\n",
              stdout);
        return 0;
    }
    if (argc < 3)
        return usage_error("luasock check", "check: missing SCRIPT");
    for (int i = 2; i < argc; i++)
        if (argv[i][0] == '-' && argv[i][1] != '\0')
            return usage_error("luasock check", "unknown option '%s'", argv[i]);
    return server_check(argv + 2, argc - 2);
}

static int run_command(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[2], "--help") == 0) {
        fputs("Usage: luasock run SCRIPT [ARGS...]\n\nRuns SCRIPT as the main coroutine, with the "
              "whole luasock API and arg set as in lua. Exits when it returns: with its integer "
              "result, 1 for false or an error (printed on stderr), else 0.\n",
              stdout);
        return 0;
    }
    if (argc < 3)
        return usage_error("luasock run", "run: missing SCRIPT");
    /* Options stop at SCRIPT: what follows it is the script's own (arg). */
    if (argv[2][0] == '-' && argv[2][1] != '\0')
        return usage_error("luasock run", "unknown option '%s'", argv[2]);
    return server_run(argv[2], argc - 3, argv + 3);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return USAGE_ERROR;
    }
    const char *command = argv[1];
    if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 ||
        strcmp(command, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(command, "--version") == 0 || strcmp(command, "-V") == 0) {
        printf("luasock %s (%s, libev %d.%d)\n", LUASOCK_VERSION, LUA_RELEASE, ev_version_major(),
               ev_version_minor());
        return 0;
    }
    if (strcmp(command, "serve") == 0)
        return serve_command(argc, argv);
    if (strcmp(command, "check") == 0)
        return check_command(argc, argv);
    if (strcmp(command, "run") == 0)
        return run_command(argc, argv);
    return usage_error("luasock", "unknown command '%s'", command);
}
