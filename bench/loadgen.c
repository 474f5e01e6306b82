/* loadgen.c -- the benchmark's load generator: N closed-loop echo or chat clients on one epoll
 * loop.
 *
 * Every connection sends messages of S bytes and checks every byte that comes back against what
 * it sent, keeping P messages in flight (P = 1: send, wait for the whole echo, send the next).
 * Message k of connection c is a slice of a fixed pseudo-random printable pattern whose offset
 * depends on c and k, so a lost, repeated, reordered or crossed message shows up as a byte
 * mismatch, which stops the run at once (exit 3). In line mode (-l) the last byte of every
 * message is "\n". After the window, what is still in flight must arrive within 30 s, or the
 * run fails (exit 3): a message lost with none sent after it is caught too.
 *
 * Measuring starts only once every connection is established and has done one round trip, and
 * lasts D seconds. With -S PID the server's own utime/stime (/proc/PID/stat) are sampled right
 * at the window's edges and its VmRSS at the end, and so are the counters of the server's core
 * and of our own (/proc/stat): how busy each core was, and how much of that went to other
 * programs. The result is one line on stdout:
 *   result msgs=N seconds=S msgs_per_s=R p50_us=X p99_us=Y max_us=M max_at_s=T errors=E
 *          [senders=K] [touches=R] [slice_...] [srv_...] loadgen_core_pct=C
 *
 * Chat mode (-C K, for examples/chat.lua and its peers): the N connections are members of one
 * chat room, and the first K of them are senders, each keeping P lines of S bytes in flight: a
 * line is in flight until every other member has received it as "<nick> line". Line k of sender
 * s is "s k " and pattern bytes, so every member checks every line it gets: from whom (the nick
 * its sender was welcomed with), in order per sender with none lost, byte for byte. A message is
 * one delivery (one line to one member); its latency runs from the line's send to its arrival
 * there. Setup waits for each member's welcome line ("* welcome to the chat, NICK!..."), then
 * each sender says one line and every member must have it: the join announcements came before
 * it, so any "* ..." line during the run is an error (someone left).
 *
 * With -w MS the window is also cut into slices of MS milliseconds, each with its own latency
 * histogram: a "slice" line per slice on stdout before the result, and the median and worst
 * slice's p99 in it, show a blip that the whole window's p99 averages away. With -u FILE -r R
 * the load generator touches FILE (as an editor's save would) R times, evenly spread over the
 * window: under `luasock serve --watch` each touch reloads the script.
 *
 * With -n COUNT the window holds exactly COUNT messages, spread over the connections as they
 * come back, and ends when the last of them has come back; -d is then only a time limit (exit 2
 * when it passes first), and a failed connection fails the run (exit 1). -n 0 ends the window at once: the run is only the set-up (every
 * connection opened and one round trip on each) and the close. bench/run counts a server's
 * instructions under valgrind for a COUNT run and for a -n 0 run, and takes the difference.
 *
 * Idle mode (-i): open the connections, do one round trip on each, print "ready conns=N" and
 * hold them until SIGUSR1, SIGTERM or SIGINT arrives, or D seconds pass, so that the harness can
 * read the server's RSS; then print the result line and exit.
 *
 * TLS (-t): every connection is TLS 1.3 (OpenSSL, non-blocking, on the same loop; SNI
 * "localhost", the server's certificate not verified: the servers' are self-signed), and the
 * result line adds the handshakes completed in the window and how many of them resumed a
 * session. With -N every message is a new connection (echo mode, P = 1): connect, handshake,
 * send the message, wait for its echo, close (close_notify, then close(2)), so msgs/s is
 * handshakes per second and a message's latency runs from its connect(2) to its echo's last
 * byte. With -R each new connection offers the session its slot's previous connection got
 * (a TLS 1.3 ticket): resumed handshakes. Opening the window closes the warmed-up connections
 * and starts the first new ones.
 *
 * -S takes one server process or several, PID,PID,...: a proxy and its backend count as one
 * server (their CPU times and VmRSS are summed; the core is the first one's). Every result
 * line also gives this process's own CPU time per message (loadgen_cpu_us_per_msg): with
 * TLS the load generator's crypto can be the bottleneck, which loadgen_core_pct shows.
 *
 * Usage: loadgen -p PORT [-H HOST] [-c CONNS] [-s SIZE] [-d SECONDS] [-n COUNT] [-P DEPTH] [-l]
 *                [-i] [-C SENDERS] [-w MS] [-u FILE -r TOUCHES] [-t [-N] [-R]]
 *                [-S SERVER_PID[,PID...]] [-T SETUP_SECONDS]
 * Exit status: 0 ok, 1 a connection failed during the run, 2 usage or setup error, 3 mismatch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATTERN_PERIOD 4093 /* prime: message offsets run through every position */
#define MAX_SETTING_UP 256  /* connections in setup at once, so no accept queue overflows */
#define READ_SIZE 65536
#define MAX_EVENTS 512
#define HIST_SUB_BITS 6 /* 64 sub-buckets per power of two: about 1.5 % resolution */
#define HIST_BUCKETS (64 << HIST_SUB_BITS)
#define CHAT_LINE_MAX 2048 /* a received chat line: SIZE (at most 1024) plus "<nick> " */
#define NICK_MAX 31
#define DRAIN_SECONDS 30 /* for what is in flight when the window ends to arrive */
#define MAX_SERVER_PIDS 4

struct options {
    const char *host, *port;
    int conns, depth, line, idle;
    int senders; /* chat mode when > 0 */
    size_t size;
    double duration, setup_timeout, slice_ms;
    const char *touch_file;
    int touches;
    long long count; /* -n: messages in the window; -1: as many as fit in the duration */
    int tls, reconnect, resume; /* -t, -N, -R */
    pid_t server;               /* the first of server_pids, 0 for none */
    pid_t server_pids[MAX_SERVER_PIDS];
    int server_count;
};

enum conn_state { CONNECTING, WARMING, READY, FAILED };

struct conn {
    int fd, index;
    enum conn_state state;
    int want_writable;
    /* Messages queued for sending; messages fully echoed (chat: lines every other member has). */
    uint64_t sent, received;
    size_t recv_off;         /* bytes of message `received` checked so far */
    char *out;               /* queued output is out[out_off, out_len) */
    size_t out_off, out_len, out_cap;
    uint64_t *stamps; /* send time (ns) of in-flight message k at stamps[k % depth] */
    /* TLS (-t): */
    SSL *ssl;
    int handshaking;
    SSL_SESSION *session; /* -R: what the slot's next connection offers to resume */
    /* Chat mode: */
    char nick[NICK_MAX + 1];
    char *line;          /* a line received in part: line[0, line_len) */
    size_t line_len;
    uint64_t *next_line; /* per sender, the line this member gets next from it */
    int *missing;        /* a sender's in-flight line k: members yet to get it, at [k % depth] */
};

/* A slice of the measured window (-w). */
struct slice {
    uint64_t msgs, max_ns;
    uint64_t histogram[HIST_BUCKETS];
};

/* One core's counters from /proc/stat, in clock ticks. The kernel measures idle time exactly
 * and samples the busy kinds at ticks (which short bursts of work miss), so busy time is taken
 * as the window minus idle. */
struct core_sample {
    unsigned long long idle;
};

/* The counters at one edge of the measured window. */
struct sample {
    unsigned long long utime, stime; /* the server's (-S), clock ticks */
    long rss_kib;                    /* the server's VmRSS */
    struct core_sample server_core, own_core;
    double own_cpu_us; /* this process's user + system time */
};

static struct options opt = {
    .host = "127.0.0.1", .conns = 50, .depth = 1, .size = 64, .duration = 5, .setup_timeout = 60,
    .count = -1};
static char *pattern;
static struct conn *conns;
static int epfd;
static int running; /* inside the measured window */
static int holding; /* idle mode, after setup */
static int next_to_open, setting_up, ready_count, live_count;
static uint64_t window_start, window_msgs, window_sent, errors;
static uint64_t window_handshakes, window_resumed;
static SSL_CTX *tls_ctx;
static uint64_t max_ns, max_at; /* the longest latency, and when (since window_start) it ended */
static uint64_t histogram[HIST_BUCKETS];
static struct slice *slices;
static int slice_count;
static uint64_t slice_ns;
static sigset_t wait_mask;
static volatile sig_atomic_t stop_requested;

static void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Latency histogram: exact below 128 ns, then 64 buckets per power of two. */
static size_t hist_bucket(uint64_t v)
{
    if (v < (2u << HIST_SUB_BITS))
        return (size_t)v;
    int shift = 63 - __builtin_clzll(v) - HIST_SUB_BITS;
    size_t bucket = ((size_t)shift << HIST_SUB_BITS) + (size_t)(v >> shift);
    return bucket < HIST_BUCKETS ? bucket : HIST_BUCKETS - 1;
}

static double hist_value(size_t bucket)
{
    if (bucket < (2u << HIST_SUB_BITS))
        return (double)bucket;
    int shift = (int)(bucket >> HIST_SUB_BITS) - 1;
    uint64_t low = (uint64_t)(bucket - ((size_t)shift << HIST_SUB_BITS)) << shift;
    return (double)low + (double)(1ull << shift) / 2;
}

static double hist_percentile_us(const uint64_t *hist, uint64_t count, double p)
{
    uint64_t rank = (uint64_t)(p * (double)count), seen = 0;
    for (size_t b = 0; b < HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen > rank)
            return hist_value(b) / 1000;
    }
    return 0;
}

static void make_pattern(void)
{
    pattern = malloc(PATTERN_PERIOD + opt.size);
    if (pattern == NULL)
        die(2, "out of memory");
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < PATTERN_PERIOD + opt.size; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pattern[i] = (char)('!' + x % 94); /* printable, never '\n' or '\r' */
    }
}

/* Where in the pattern message k of connection c starts. */
static const char *message_bytes(const struct conn *c, uint64_t k)
{
    return pattern + ((uint64_t)c->index * 977 + k * 31) % PATTERN_PERIOD;
}

/* Line k of chat sender s, SIZE bytes: "s k ", pattern bytes, "\n". */
static void chat_text(int s, uint64_t k, char *dst)
{
    int n = snprintf(dst, opt.size, "%d %llu ", s, (unsigned long long)k);
    memcpy(dst + n, message_bytes(&conns[s], k), opt.size - 1 - (size_t)n);
    dst[opt.size - 1] = '\n';
}

/* Counts one message that took from sent_at to now. */
static void record_latency(uint64_t sent_at, uint64_t now)
{
    uint64_t ns = now - sent_at;
    size_t bucket = hist_bucket(ns);
    histogram[bucket]++;
    window_msgs++;
    if (ns > max_ns) {
        max_ns = ns;
        max_at = now - window_start;
    }
    if (slices == NULL)
        return;
    uint64_t i = (now - window_start) / slice_ns;
    if (i < (uint64_t)slice_count) {
        struct slice *s = &slices[i];
        s->histogram[bucket]++;
        s->msgs++;
        if (ns > s->max_ns)
            s->max_ns = ns;
    }
}

static void mismatch(const struct conn *c, size_t at, char want, char got)
{
    die(3, "MISMATCH on connection %d, message %llu, byte %zu: sent 0x%02x, got 0x%02x",
        c->index, (unsigned long long)c->received, at, (unsigned char)want, (unsigned char)got);
}

/* Checks n received bytes that continue message `received` at offset recv_off. */
static void check_bytes(const struct conn *c, const char *data, size_t n)
{
    size_t body = opt.line ? opt.size - 1 : opt.size;
    const char *want = message_bytes(c, c->received) + c->recv_off;
    size_t in_body = c->recv_off >= body ? 0 : body - c->recv_off;
    if (in_body > n)
        in_body = n;
    if (memcmp(data, want, in_body) != 0) {
        size_t i = 0;
        while (data[i] == want[i])
            i++;
        mismatch(c, c->recv_off + i, want[i], data[i]);
    }
    if (in_body < n && data[in_body] != '\n')
        mismatch(c, c->recv_off + in_body, '\n', data[in_body]);
}

static void set_events(struct conn *c, int want_writable)
{
    if (c->want_writable == want_writable)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_writable ? EPOLLOUT : 0u), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die(2, "epoll_ctl: %s", strerror(errno));
    c->want_writable = want_writable;
}

static void conn_failed(struct conn *c, const char *why)
{
    if (!running && !holding)
        die(2, "connection %d failed during setup: %s", c->index, why);
    /* -n: its messages would be missing from the count forever. */
    if (opt.count >= 0)
        die(1, "connection %d failed: %s", c->index, why);
    /* Its senders' lines would wait for it forever. */
    if (opt.senders > 0)
        die(1, "chat member %d (%s) failed: %s", c->index, c->nick, why);
    if (errors < 10)
        fprintf(stderr, "loadgen: connection %d failed: %s\n", c->index, why);
    errors++;
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    c->state = FAILED;
    live_count--;
}

/* Why TLS call `what` returned rc: a WANT_ condition waits for the socket (and returns 1); any
 * other fails the connection (and returns 0). Reading is always on: a read that wants more
 * input leaves the events as they are (a write may be waiting for writability). */
static int tls_wait(struct conn *c, int rc, const char *what)
{
    int err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_WRITE) {
        set_events(c, 1);
        return 1;
    }
    if (err == SSL_ERROR_WANT_READ) {
        if (strcmp(what, "read") != 0)
            set_events(c, 0);
        return 1;
    }
    char why[256];
    if (err == SSL_ERROR_ZERO_RETURN) {
        snprintf(why, sizeof why, "closed by the server (close_notify)");
    } else if (err == SSL_ERROR_SYSCALL) {
        snprintf(why, sizeof why, "tls %s: %s", what,
                 errno != 0 ? strerror(errno) : "closed by the server");
    } else {
        char reason[200];
        ERR_error_string_n(ERR_peek_last_error(), reason, sizeof reason);
        snprintf(why, sizeof why, "tls %s: %s", what, reason);
    }
    conn_failed(c, why);
    return 0;
}

static void flush(struct conn *c);

/* Drives the handshake; once done, sends what is queued. */
static void tls_handshake(struct conn *c)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(c->ssl);
    if (rc != 1) {
        tls_wait(c, rc, "handshake");
        return;
    }
    c->handshaking = 0;
    if (running) {
        window_handshakes++;
        window_resumed += (uint64_t)SSL_session_reused(c->ssl);
    }
    flush(c);
}

static void tls_flush(struct conn *c)
{
    if (c->handshaking) {
        tls_handshake(c);
        return;
    }
    while (c->out_off < c->out_len) {
        ERR_clear_error();
        errno = 0;
        int n = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
        if (n <= 0) {
            tls_wait(c, n, "write");
            return;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    set_events(c, 0);
}

static void flush(struct conn *c)
{
    if (c->ssl != NULL) {
        tls_flush(c);
        return;
    }
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            set_events(c, 1);
            return;
        }
        if (n < 0) {
            conn_failed(c, strerror(errno));
            return;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    set_events(c, 0);
}

/* Appends the next message to the connection's output; flush() sends it. */
static void queue_message(struct conn *c, uint64_t now)
{
    if (c->out_len + opt.size > c->out_cap) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    char *dst = c->out + c->out_len;
    size_t slot = c->sent % (uint64_t)opt.depth;
    if (opt.senders > 0) {
        chat_text(c->index, c->sent, dst);
        c->missing[slot] = opt.conns - 1;
    } else {
        memcpy(dst, message_bytes(c, c->sent), opt.size);
        if (opt.line)
            dst[opt.size - 1] = '\n';
    }
    c->out_len += opt.size;
    c->stamps[slot] = now;
    c->sent++;
    if (running)
        window_sent++;
}

/* Whether the window takes another message (-n: only COUNT of them). */
static int may_send(void)
{
    return running && (opt.count < 0 || window_sent < (uint64_t)opt.count);
}

static void open_next(void);
static void open_socket(struct conn *c);

/* -N: the connection's message is done; the next one goes on a new connection. */
static void reconnect(struct conn *c, uint64_t now)
{
    if (c->ssl != NULL) {
        SSL_shutdown(c->ssl); /* sends close_notify if the socket takes it now */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);
    queue_message(c, now); /* sent once connected; its latency includes the connect */
    open_socket(c);
}

static void next_message(struct conn *c, uint64_t now)
{
    if (opt.reconnect)
        reconnect(c, now);
    else
        queue_message(c, now);
}

static void warmed_up(struct conn *c)
{
    c->state = READY;
    ready_count++;
    setting_up--;
    while (setting_up < MAX_SETTING_UP && next_to_open < opt.conns)
        open_next();
}

static void message_done(struct conn *c, uint64_t now)
{
    uint64_t k = c->received++;
    c->recv_off = 0;
    if (c->state == WARMING) {
        warmed_up(c);
    } else if (running) {
        record_latency(c->stamps[k % (uint64_t)opt.depth], now);
        if (may_send())
            next_message(c, now);
    }
}

static void chat_mismatch(const struct conn *c, const char *why, const char *line, size_t len)
    __attribute__((noreturn));

static void chat_mismatch(const struct conn *c, const char *why, const char *line, size_t len)
{
    die(3, "MISMATCH on chat member %d (%s): %s; got \"%.*s\"", c->index, c->nick, why,
        (int)(len - 1), line);
}

/* A "* ..." line: before the run, the member's welcome (which names it) or a join. */
static void chat_notice(struct conn *c, const char *line, size_t len)
{
    static const char welcome[] = "* welcome to the chat, ";
    size_t prefix = sizeof welcome - 1;
    if (running)
        chat_mismatch(c, "an announcement during the run", line, len);
    if (c->state != WARMING)
        return;
    const char *bang = memchr(line, '!', len);
    size_t n = bang != NULL ? (size_t)(bang - line) : 0;
    if (n <= prefix || n - prefix > NICK_MAX || memcmp(line, welcome, prefix) != 0)
        chat_mismatch(c, "expected the welcome line \"* welcome to the chat, NICK!...\"", line,
                      len);
    memcpy(c->nick, line + prefix, n - prefix);
    c->nick[n - prefix] = '\0';
    warmed_up(c);
}

/* Line k of a sender has reached every other member: its slot can take the next line. */
static void chat_line_done(struct conn *sender, uint64_t now)
{
    sender->received++;
    if (running) {
        queue_message(sender, now);
        flush(sender);
    }
}

/* Checks one whole line (with its "\n") that member c received. */
static void chat_line(struct conn *c, const char *line, size_t len, uint64_t now)
{
    if (line[0] == '*') {
        chat_notice(c, line, len);
        return;
    }
    if (c->state == WARMING)
        chat_mismatch(c, "a line before the welcome", line, len);
    /* "<nick> s k pattern": the text is what sender s sent, all of it. */
    const char *gt = memchr(line, '>', len);
    if (line[0] != '<' || gt == NULL || (size_t)(gt - line) + 2 >= len || gt[1] != ' ' ||
        gt[2] < '0' || gt[2] > '9')
        chat_mismatch(c, "not a line \"<nick> text\"", line, len);
    unsigned long s = strtoul(gt + 2, NULL, 10);
    if (s >= (unsigned long)opt.senders || (int)s == c->index)
        chat_mismatch(c, "no line it could get", line, len);
    struct conn *sender = &conns[s];
    size_t nick_len = (size_t)(gt - line) - 1;
    if (nick_len != strlen(sender->nick) || memcmp(line + 1, sender->nick, nick_len) != 0)
        chat_mismatch(c, "the nick is not its sender's", line, len);
    uint64_t k = c->next_line[s]++;
    char want[1024];
    chat_text((int)s, k, want);
    if (len - nick_len - 3 != opt.size || memcmp(gt + 2, want, opt.size) != 0) {
        char why[80];
        snprintf(why, sizeof why, "expected line %llu of sender %lu (lost, reordered or changed)",
                 (unsigned long long)k, s);
        chat_mismatch(c, why, line, len);
    }
    size_t slot = k % (uint64_t)opt.depth;
    if (running)
        record_latency(sender->stamps[slot], now);
    if (--sender->missing[slot] == 0)
        chat_line_done(sender, now);
}

/* Splits received bytes into lines, keeping an unfinished one for the next read. */
static void chat_bytes(struct conn *c, const char *data, size_t n, uint64_t now)
{
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl != NULL ? (size_t)(nl - data) + 1 : n;
        if (c->line_len + take > CHAT_LINE_MAX)
            die(3, "chat member %d (%s): a line longer than %d bytes", c->index, c->nick,
                CHAT_LINE_MAX);
        if (c->line_len == 0 && nl != NULL) {
            chat_line(c, data, take, now);
        } else {
            memcpy(c->line + c->line_len, data, take);
            c->line_len += take;
            if (nl != NULL) {
                chat_line(c, c->line, c->line_len, now);
                c->line_len = 0;
            }
        }
        data += take;
        n -= take;
    }
}

/* Checks echoed bytes against the messages sent, and completes each whole one. */
static void echo_bytes(struct conn *c, const char *data, size_t left, uint64_t now)
{
    while (left > 0) {
        if (c->received == c->sent)
            die(3, "connection %d: %zu bytes arrived that were never sent", c->index, left);
        size_t take = opt.size - c->recv_off;
        if (take > left)
            take = left;
        check_bytes(c, data, take);
        c->recv_off += take;
        data += take;
        left -= take;
        if (c->recv_off == opt.size) {
            message_done(c, now);
            if (c->state == CONNECTING && left > 0) /* -N: the connection is gone */
                die(3, "connection %d: %zu bytes arrived after the echo", c->index, left);
        }
    }
}

/* Reads what OpenSSL has until it wants more input: a record it buffered would not wake the
 * loop again. */
static void tls_readable(struct conn *c)
{
    static char buf[READ_SIZE];
    if (c->handshaking) {
        tls_handshake(c);
        if (c->handshaking || c->state == FAILED)
            return;
    }
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n <= 0) {
            if (tls_wait(c, n, "read") && c->out_len > c->out_off)
                flush(c);
            return;
        }
        echo_bytes(c, buf, (size_t)n, now_ns());
        if (c->state == CONNECTING || c->state == FAILED)
            return;
    }
}

static void on_readable(struct conn *c)
{
    static char buf[READ_SIZE];
    if (c->ssl != NULL) {
        tls_readable(c);
        return;
    }
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_failed(c, n == 0 ? "closed by the server" : strerror(errno));
        return;
    }
    uint64_t now = now_ns();
    if (opt.senders > 0) {
        chat_bytes(c, buf, (size_t)n, now);
        return;
    }
    echo_bytes(c, buf, (size_t)n, now);
    if (c->state != CONNECTING && c->out_len > c->out_off)
        flush(c);
}

/* -R: keeps the newest session the server gave this slot's connection (TLS 1.3 sends its
 * tickets after the handshake). */
static int on_new_session(SSL *ssl, SSL_SESSION *session)
{
    struct conn *c = SSL_get_app_data(ssl);
    SSL_SESSION_free(c->session);
    c->session = session;
    return 1; /* the reference is ours */
}

static void tls_setup(void)
{
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (tls_ctx == NULL || !SSL_CTX_set_min_proto_version(tls_ctx, TLS1_3_VERSION))
        die(2, "tls setup: %s", ERR_error_string(ERR_get_error(), NULL));
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (opt.resume) {
        SSL_CTX_set_session_cache_mode(tls_ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(tls_ctx, on_new_session);
    }
}

/* A TLS client on the connected socket; flush() runs the handshake. With -R it offers a copy of
 * the slot's newest session: OpenSSL marks a TLS 1.3 session it has resumed as used up, and not
 * every server sends a new ticket after a resumed handshake (Node.js does not), so the next
 * connection offers the same ticket again, as the server's stateless tickets allow. */
static void tls_start(struct conn *c)
{
    c->ssl = SSL_new(tls_ctx);
    SSL_SESSION *offer = opt.resume && c->session != NULL ? SSL_SESSION_dup(c->session) : NULL;
    if (c->ssl == NULL || !SSL_set_fd(c->ssl, c->fd) ||
        !SSL_set_tlsext_host_name(c->ssl, "localhost") ||
        (opt.resume && c->session != NULL && (offer == NULL || !SSL_set_session(c->ssl, offer))))
        die(2, "tls: %s", ERR_error_string(ERR_get_error(), NULL));
    SSL_SESSION_free(offer); /* the SSL holds its own reference */
    SSL_set_connect_state(c->ssl);
    SSL_set_app_data(c->ssl, c);
    c->handshaking = 1;
}

static void on_connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 && c->received == 0)
        die(2, "connect to %s:%s: %s", opt.host, opt.port, strerror(err));
    if (err != 0) {
        conn_failed(c, strerror(err));
        return;
    }
    /* -N: a connection after the first has its message queued already. */
    c->state = c->received > 0 ? READY : WARMING;
    if (c->sent == 0 && opt.senders == 0) /* a chat member waits for its welcome */
        queue_message(c, now_ns());
    if (opt.tls)
        tls_start(c);
    flush(c);
}

static void on_event(struct conn *c, uint32_t events)
{
    if (c->state == CONNECTING) {
        on_connected(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(c);
    if ((events & EPOLLOUT) && c->state != FAILED && c->state != CONNECTING)
        flush(c);
}

static struct addrinfo *server_address(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai;
    int rc = getaddrinfo(opt.host, opt.port, &hints, &ai);
    if (rc != 0)
        die(2, "address %s:%s: %s", opt.host, opt.port, gai_strerror(rc));
    return ai;
}

/* Starts connecting c's socket (again, with -N). */
static void open_socket(struct conn *c)
{
    static struct addrinfo *ai;
    if (ai == NULL)
        ai = server_address();
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die(2, "socket: %s (connection %d)", strerror(errno), c->index);
    int on = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)
        die(2, "connect to %s:%s: %s", opt.host, opt.port, strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die(2, "epoll_ctl: %s", strerror(errno));
    c->want_writable = 1;
    c->state = CONNECTING;
}

static void open_next(void)
{
    struct conn *c = &conns[next_to_open];
    c->index = next_to_open++;
    c->out_cap = opt.size * (size_t)opt.depth;
    c->out = malloc(c->out_cap);
    c->stamps = malloc(sizeof *c->stamps * (size_t)opt.depth);
    if (c->out == NULL || c->stamps == NULL)
        die(2, "out of memory");
    if (opt.senders > 0) {
        c->line = malloc(CHAT_LINE_MAX);
        c->next_line = calloc((size_t)opt.senders, sizeof *c->next_line);
        c->missing = calloc((size_t)opt.depth, sizeof *c->missing);
        if (c->line == NULL || c->next_line == NULL || c->missing == NULL)
            die(2, "out of memory");
    }
    open_socket(c);
    setting_up++;
    live_count++;
}

/* Runs the loop until done() holds, a stop signal arrives or the deadline passes. */
static void run_until(uint64_t deadline, int (*done)(void))
{
    struct epoll_event events[MAX_EVENTS];
    while (!stop_requested && !done()) {
        uint64_t now = now_ns();
        if (now >= deadline)
            return;
        int timeout_ms = (int)((deadline - now + 999999) / 1000000);
        int n = epoll_pwait(epfd, events, MAX_EVENTS, timeout_ms, &wait_mask);
        if (n < 0 && errno != EINTR)
            die(2, "epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++)
            on_event(events[i].data.ptr, events[i].events);
    }
}

static int all_ready(void) { return ready_count == opt.conns; }
static int none_live(void) { return live_count == 0; }
static int count_done(void) { return none_live() || window_msgs >= (uint64_t)opt.count; }

/* Whether everything sent has come back (chat: every line has reached every other member),
 * failed connections aside. */
static int all_answered(void)
{
    for (int i = 0; i < (opt.senders > 0 ? opt.senders : opt.conns); i++)
        if (conns[i].state != FAILED && conns[i].received < conns[i].sent)
            return 0;
    return 1;
}

/* Chat: the round trip before measuring is one line from each sender to every other member. */
static void chat_warm_up(uint64_t deadline)
{
    uint64_t now = now_ns();
    for (int i = 0; i < opt.senders; i++) {
        queue_message(&conns[i], now);
        flush(&conns[i]);
    }
    run_until(deadline, all_answered);
    if (!all_answered())
        die(2, "setup: the first line of each sender had not reached every member in time");
}

/* After the window nothing new is sent, and what is still in flight must arrive: a message lost
 * on the way would otherwise only stall its connection (chat: its sender) unnoticed. */
static void drain(void)
{
    run_until(now_ns() + DRAIN_SECONDS * 1000000000ull, all_answered);
    if (stop_requested || all_answered())
        return;
    for (int i = 0; i < (opt.senders > 0 ? opt.senders : opt.conns); i++) {
        const struct conn *c = &conns[i];
        if (c->state == FAILED || c->received == c->sent)
            continue;
        if (opt.senders == 0)
            die(3, "LOST: message %llu of connection %d had not come back %d s after the run",
                (unsigned long long)c->received, i, DRAIN_SECONDS);
        for (int m = 0; m < opt.conns; m++)
            if (m != i && conns[m].next_line[i] <= c->received)
                die(3, "LOST: line %llu of sender %d (%s) had not reached member %d (%s) %d s "
                    "after the run", (unsigned long long)c->received, i, c->nick, m,
                    conns[m].nick, DRAIN_SECONDS);
    }
}

static int read_file(const char *fmt, pid_t pid, char *buf, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, fmt, (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

/* Field n (1-based, as in proc(5)) of /proc/PID/stat, from the text after the command name. */
static const char *stat_field(const char *buf, int n)
{
    const char *p = strrchr(buf, ')');
    for (int field = 2; p != NULL && field < n; field++)
        p = strchr(p + 1, ' ');
    return p != NULL ? p + 1 : "";
}

/* The server's processes' CPU times and VmRSS, summed. */
static void sample_server(struct sample *s)
{
    char buf[4096];
    s->utime = s->stime = 0;
    s->rss_kib = 0;
    for (int i = 0; i < opt.server_count; i++) {
        pid_t pid = opt.server_pids[i];
        if (read_file("/proc/%d/stat", pid, buf, sizeof buf) < 0)
            die(2, "server %d: cannot read /proc/%d/stat", (int)pid, (int)pid);
        s->utime += strtoull(stat_field(buf, 14), NULL, 10);
        s->stime += strtoull(stat_field(buf, 15), NULL, 10);
        const char *rss = NULL;
        if (read_file("/proc/%d/status", pid, buf, sizeof buf) == 0)
            rss = strstr(buf, "\nVmRSS:");
        if (rss == NULL || s->rss_kib < 0)
            s->rss_kib = -1;
        else
            s->rss_kib += strtol(rss + 7, NULL, 10);
    }
}

/* The core the server last ran on (field 39 of /proc/PID/stat). */
static int server_core(void)
{
    char buf[4096];
    if (read_file("/proc/%d/stat", opt.server, buf, sizeof buf) < 0)
        die(2, "server %d: cannot read /proc/%d/stat", (int)opt.server, (int)opt.server);
    return atoi(stat_field(buf, 39));
}

static struct core_sample sample_core(const char *proc_stat, int cpu)
{
    struct core_sample c = {0};
    char name[32];
    snprintf(name, sizeof name, "\ncpu%d ", cpu);
    const char *line = strstr(proc_stat, name);
    unsigned long long idle, iowait; /* after user, nice and system */
    if (line != NULL &&
        sscanf(line + strlen(name), "%*u %*u %*u %llu %llu", &idle, &iowait) == 2)
        c.idle = idle + iowait;
    return c;
}

static double own_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void take_sample(struct sample *s, int srv_cpu, int own_cpu)
{
    static char proc_stat[16384];
    proc_stat[0] = '\n';
    FILE *f = fopen("/proc/stat", "r");
    size_t n = f != NULL ? fread(proc_stat + 1, 1, sizeof proc_stat - 2, f) : 0;
    if (f != NULL)
        fclose(f);
    proc_stat[n + 1] = '\0';
    s->own_core = sample_core(proc_stat, own_cpu);
    s->own_cpu_us = own_cpu_us();
    if (opt.server > 0) {
        sample_server(s);
        s->server_core = sample_core(proc_stat, srv_cpu);
    }
}

/* Time of a core in the window, in % of the window: all busy time, and busy time that was not
 * the given process's (`own_us`, which includes the softirq work done in its system calls):
 * other programs on that core. */
static void print_core(const char *name, const struct core_sample *a,
                       const struct core_sample *b, double own_us, double window_us)
{
    double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK);
    double busy = window_us - (double)(b->idle - a->idle) * tick_us;
    printf(" %s_core_pct=%.1f %s_core_other_pct=%.1f", name, busy / window_us * 100, name,
           (busy - own_us) / window_us * 100);
}

static void print_figures(const struct sample *a, const struct sample *b, double seconds)
{
    double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK), window_us = seconds * 1e6;
    double msgs = window_msgs > 0 ? (double)window_msgs : 1;
    if (opt.server > 0) {
        double user_us = (double)(b->utime - a->utime) * tick_us;
        double sys_us = (double)(b->stime - a->stime) * tick_us;
        printf(" srv_user_us_per_msg=%.4f srv_sys_us_per_msg=%.4f srv_rss_kib=%ld",
               user_us / msgs, sys_us / msgs, b->rss_kib);
        print_core("srv", &a->server_core, &b->server_core, user_us + sys_us, window_us);
    }
    print_core("loadgen", &a->own_core, &b->own_core, b->own_cpu_us - a->own_cpu_us, window_us);
    printf(" loadgen_cpu_us_per_msg=%.4f", (b->own_cpu_us - a->own_cpu_us) / msgs);
    putchar('\n');
}

static void touch(void)
{
    if (utimensat(AT_FDCWD, opt.touch_file, NULL, 0) < 0)
        die(2, "touch %s: %s", opt.touch_file, strerror(errno));
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Prints a "slice" line per slice, and the result's fields about them into `fields`. */
static void print_slices(char *fields, size_t size)
{
    double *p99 = malloc(sizeof *p99 * (size_t)slice_count);
    double *sorted = malloc(sizeof *sorted * (size_t)slice_count);
    if (p99 == NULL || sorted == NULL)
        die(2, "out of memory");
    int worst = 0;
    for (int i = 0; i < slice_count; i++) {
        const struct slice *s = &slices[i];
        p99[i] = sorted[i] = hist_percentile_us(s->histogram, s->msgs, 0.99);
        printf("slice start_s=%.3f msgs=%llu p50_us=%.1f p99_us=%.1f max_us=%.1f\n",
               (double)i * (double)slice_ns / 1e9, (unsigned long long)s->msgs,
               hist_percentile_us(s->histogram, s->msgs, 0.50), p99[i], (double)s->max_ns / 1e3);
        if (p99[i] > p99[worst])
            worst = i;
    }
    qsort(sorted, (size_t)slice_count, sizeof *sorted, compare_doubles);
    snprintf(fields, size,
             " slices=%d slice_ms=%g slice_p99_median_us=%.1f slice_p99_worst_us=%.1f "
             "slice_p99_worst_at_s=%.3f",
             slice_count, opt.slice_ms, sorted[slice_count / 2], p99[worst],
             (double)worst * (double)slice_ns / 1e9);
    free(p99);
    free(sorted);
}

static void measure(void)
{
    struct sample before = {0}, after = {0};
    int srv_cpu = opt.server > 0 ? server_core() : -1, own_cpu = sched_getcpu();
    uint64_t length = (uint64_t)(opt.duration * 1e9);
    if (opt.slice_ms > 0) {
        slice_ns = (uint64_t)(opt.slice_ms * 1e6);
        slice_count = (int)(length / slice_ns); /* whole slices only: a last sliver is noise */
        slices = calloc((size_t)slice_count, sizeof *slices);
        if (slices == NULL)
            die(2, "out of memory for %d slices", slice_count);
    }
    take_sample(&before, srv_cpu, own_cpu);
    uint64_t t0 = window_start = now_ns();
    running = 1;
    for (int i = 0; i < (opt.senders > 0 ? opt.senders : opt.conns); i++) {
        if (opt.reconnect) {
            if (may_send())
                reconnect(&conns[i], t0);
            continue;
        }
        for (int k = 0; k < opt.depth && may_send(); k++)
            queue_message(&conns[i], t0);
        flush(&conns[i]);
    }
    for (int k = 1; k <= opt.touches; k++) {
        run_until(t0 + length / (uint64_t)(opt.touches + 1) * (uint64_t)k, none_live);
        touch();
    }
    if (opt.count >= 0) {
        run_until(t0 + length, count_done);
        if (errors == 0 && window_msgs < (uint64_t)opt.count)
            die(2, "only %llu of %lld messages had come back after %g s",
                (unsigned long long)window_msgs, opt.count, opt.duration);
    } else {
        run_until(t0 + length, none_live);
    }
    uint64_t t1 = now_ns();
    take_sample(&after, srv_cpu, own_cpu);
    running = 0;
    drain();
    char slice_fields[256] = "";
    if (slices != NULL)
        print_slices(slice_fields, sizeof slice_fields);
    double seconds = (double)(t1 - t0) / 1e9;
    printf("result msgs=%llu seconds=%.3f msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f max_us=%.1f "
           "max_at_s=%.3f errors=%llu",
           (unsigned long long)window_msgs, seconds, (double)window_msgs / seconds,
           hist_percentile_us(histogram, window_msgs, 0.50),
           hist_percentile_us(histogram, window_msgs, 0.99), (double)max_ns / 1e3,
           (double)max_at / 1e9, (unsigned long long)errors);
    if (opt.senders > 0)
        printf(" senders=%d", opt.senders);
    if (opt.touches > 0)
        printf(" touches=%d", opt.touches);
    if (opt.tls)
        printf(" handshakes=%llu resumed=%llu", (unsigned long long)window_handshakes,
               (unsigned long long)window_resumed);
    fputs(slice_fields, stdout);
    print_figures(&before, &after, seconds);
}

static void hold(void)
{
    holding = 1;
    printf("ready conns=%d\n", opt.conns);
    fflush(stdout);
    run_until(now_ns() + (uint64_t)(opt.duration * 1e9), none_live);
    printf("result conns=%d errors=%llu\n", live_count, (unsigned long long)errors);
}

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Stop signals are blocked except inside epoll_pwait, so none is lost between checks. */
static void setup_signals(void)
{
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGUSR1);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    sigprocmask(SIG_BLOCK, &stops, &wait_mask);
    sigdelset(&wait_mask, SIGUSR1);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.conns + 16)
        die(2, "%d connections need more file descriptors than RLIMIT_NOFILE allows (%llu)",
            opt.conns, (unsigned long long)rl.rlim_cur);
}

static void usage(void)
{
    die(2, "usage: loadgen -p PORT [-H HOST] [-c CONNS] [-s SIZE] [-d SECONDS] [-n COUNT] "
           "[-P DEPTH] [-l] [-i] [-C SENDERS] [-w MS] [-u FILE -r TOUCHES] [-t [-N] [-R]] "
           "[-S SERVER_PID[,PID...]] [-T SETUP_SECONDS]");
}

/* -S PID[,PID...] */
static void parse_servers(const char *list)
{
    char *end;
    opt.server_count = 0;
    do {
        long pid = strtol(list, &end, 10);
        if (end == list || pid <= 0 || opt.server_count == MAX_SERVER_PIDS ||
            (*end != ',' && *end != '\0'))
            usage();
        opt.server_pids[opt.server_count++] = (pid_t)pid;
        list = end + 1;
    } while (*end == ',');
    opt.server = opt.server_pids[0];
}

static void parse_options(int argc, char **argv)
{
    int ch;
    while ((ch = getopt(argc, argv, "H:p:c:s:d:n:P:liC:w:u:r:tNRS:T:")) != -1) {
        switch (ch) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = optarg; break;
        case 'c': opt.conns = atoi(optarg); break;
        case 's': opt.size = (size_t)atol(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'n': opt.count = atoll(optarg); break;
        case 'P': opt.depth = atoi(optarg); break;
        case 'l': opt.line = 1; break;
        case 'i': opt.idle = 1; break;
        case 'C': opt.senders = atoi(optarg); break;
        case 'w': opt.slice_ms = atof(optarg); break;
        case 'u': opt.touch_file = optarg; break;
        case 'r': opt.touches = atoi(optarg); break;
        case 't': opt.tls = 1; break;
        case 'N': opt.reconnect = 1; break;
        case 'R': opt.resume = 1; break;
        case 'S': parse_servers(optarg); break;
        case 'T': opt.setup_timeout = atof(optarg); break;
        default: usage();
        }
    }
    if (opt.port == NULL || optind != argc || opt.conns < 1 || opt.size < 1 ||
        opt.size > 1048576 || opt.depth < 1 || opt.duration <= 0 || opt.setup_timeout <= 0 ||
        opt.senders < 0 || opt.slice_ms < 0 || opt.touches < 0 ||
        (opt.touches > 0) != (opt.touch_file != NULL) ||
        (opt.slice_ms > 0 && opt.slice_ms * 1e-3 > opt.duration) || opt.count < -1 ||
        (opt.count >= 0 && (opt.senders > 0 || opt.idle || opt.slice_ms > 0 || opt.touches > 0)))
        usage();
    /* A chat line holds "s k " and must pass chat.lua's max_line (1024). */
    if (opt.senders > 0 && (opt.senders > opt.conns || opt.conns < 2 || opt.size < 32 ||
                            opt.size > 1024 || opt.line || opt.idle))
        die(2, "chat mode (-C) needs 1 to CONNS senders, CONNS >= 2 and 32 <= SIZE <= 1024, "
               "without -l or -i");
    if (opt.reconnect && (opt.depth != 1 || opt.senders > 0 || opt.idle))
        die(2, "-N (a new connection per message) needs echo mode with -P 1, without -i");
    if ((opt.resume && !(opt.tls && opt.reconnect)) || (opt.tls && opt.senders > 0))
        die(2, "-R needs -t and -N; -t works in echo, line and idle modes (not chat)");
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    setup_signals();
    raise_fd_limit();
    make_pattern();
    if (opt.tls)
        tls_setup();
    conns = calloc((size_t)opt.conns, sizeof *conns);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (conns == NULL || epfd < 0)
        die(2, "setup: %s", strerror(errno));
    uint64_t t0 = now_ns();
    while (setting_up < MAX_SETTING_UP && next_to_open < opt.conns)
        open_next();
    uint64_t deadline = t0 + (uint64_t)(opt.setup_timeout * 1e9);
    run_until(deadline, all_ready);
    if (!all_ready())
        die(2, "setup: %d of %d connections had done their first round trip after %.1f s",
            ready_count, opt.conns, (double)(now_ns() - t0) / 1e9);
    if (opt.senders > 0)
        chat_warm_up(deadline);
    fprintf(stderr, "loadgen: %d connections ready in %.2f s\n", opt.conns,
            (double)(now_ns() - t0) / 1e9);
    if (opt.idle)
        hold();
    else
        measure();
    return errors > 0 ? 1 : 0;
}
