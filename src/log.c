/* log.c -- timestamped log lines, as text or JSON, on stderr or appended to a file.
 *
 * Each line is formatted whole and written with one write(2), so lines from a busy server, or
 * from several workers appending to one file (O_APPEND), never interleave mid-line. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "utf8.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static const struct {
    const char *name;
    enum luasock_log_level level;
} aliases[] = {
    {"debug", LUASOCK_LOG_DEBUG}, {"info", LUASOCK_LOG_INFO},      {"notice", LUASOCK_LOG_INFO},
    {"warn", LUASOCK_LOG_WARN},   {"warning", LUASOCK_LOG_WARN},   {"error", LUASOCK_LOG_ERROR},
    {"err", LUASOCK_LOG_ERROR},   {"critical", LUASOCK_LOG_ERROR}, {"crit", LUASOCK_LOG_ERROR},
    {"alert", LUASOCK_LOG_ERROR}, {"emerg", LUASOCK_LOG_ERROR},
};

static enum luasock_log_level min_level = LUASOCK_LOG_INFO;
static bool json;
static int out_fd = STDERR_FILENO;
static const char *file_path;
static char origin[32];
static int worker;
static const char *script;

int log_level_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcasecmp(name, aliases[i].name) == 0)
            return (int)aliases[i].level;
    return -1;
}

void log_set_level(enum luasock_log_level level)
{
    min_level = level;
}

bool log_wants(enum luasock_log_level level)
{
    return level >= min_level;
}

void log_set_json(bool on)
{
    json = on;
}

bool log_is_json(void)
{
    return json;
}

static int open_append(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int log_open_file(const char *path)
{
    int fd = open_append(path);
    if (fd < 0)
        return -1;
    out_fd = fd;
    file_path = path;
    return 0;
}

void log_reopen(void)
{
    if (file_path == NULL)
        return;
    int fd = open_append(file_path);
    if (fd < 0) {
        luasock_log(LUASOCK_LOG_ERROR, "reopening the log file %s: %s; still writing to the old "
                    "one", file_path, strerror(errno));
        return;
    }
    /* The descriptor's number stays: a line being formatted meanwhile goes to one file. */
    dup2(fd, out_fd);
    close(fd);
    luasock_log(LUASOCK_LOG_INFO, "reopened the log file %s", file_path);
}

void log_set_worker(int id)
{
    worker = id;
    snprintf(origin, sizeof origin, "worker %d: ", id);
}

void log_set_script(const char *path)
{
    script = path;
}

/* A growing line: a stack buffer first, the heap for long ones (tracebacks). On running out
 * of memory the line is cut short rather than lost. */
struct line {
    char *text;
    size_t len, size;
    char small[1024];
};

static bool reserve(struct line *l, size_t more)
{
    if (l->len + more <= l->size)
        return true;
    size_t size = l->size * 2 > l->len + more ? l->size * 2 : l->len + more;
    char *bigger = l->text == l->small ? malloc(size) : realloc(l->text, size);
    if (bigger == NULL)
        return false;
    if (l->text == l->small)
        memcpy(bigger, l->small, l->len);
    l->text = bigger;
    l->size = size;
    return true;
}

static void add(struct line *l, const char *s, size_t n)
{
    if (reserve(l, n)) {
        memcpy(l->text + l->len, s, n);
        l->len += n;
    }
}

static void addf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void addf(struct line *l, const char *fmt, ...)
{
    char piece[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(piece, sizeof piece, fmt, ap);
    va_end(ap);
    add(l, piece, n < (int)sizeof piece ? (size_t)n : sizeof piece - 1);
}

static void add_message(struct line *l, const char *fmt, va_list ap)
{
    if (!reserve(l, 1))
        return;
    va_list again;
    va_copy(again, ap);
    size_t room = l->size - l->len;
    int n = vsnprintf(l->text + l->len, room, fmt, ap);
    if (n >= 0 && (size_t)n >= room && reserve(l, (size_t)n + 1))
        vsnprintf(l->text + l->len, (size_t)n + 1, fmt, again);
    va_end(again);
    if (n > 0)
        l->len += (size_t)n < l->size - l->len ? (size_t)n : l->size - l->len - 1;
}

/* A JSON string: quotes, backslashes and control characters escaped, and every byte that is
 * not part of valid UTF-8 replaced by U+FFFD, so that any JSON parser takes the line. */
static void add_json_string(struct line *l, const char *s, size_t n)
{
    add(l, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            add(l, "\\", 1);
            add(l, s + i++, 1);
        } else if (c == '\n' || c == '\t') {
            add(l, c == '\n' ? "\\n" : "\\t", 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            addf(l, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            add(l, s + i++, 1);
        } else {
            size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (i + len <= n && utf8_valid(s + i, len)) {
                add(l, s + i, len);
                i += len;
            } else {
                add(l, "\\ufffd", 6);
                i++;
            }
        }
    }
    add(l, "\"", 1);
}

static void write_line(const struct line *l)
{
    size_t done = 0;
    while (done < l->len) {
        ssize_t n = write(out_fd, l->text + done, l->len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        done += (size_t)n;
    }
}

static void log_line(enum luasock_log_level level, uint64_t conn, const char *peer,
                     const char *fmt, va_list ap)
{
    struct timespec now;
    struct tm tm;
    char stamp[32];
    struct line l = {.size = sizeof l.small};
    l.text = l.small;
    clock_gettime(CLOCK_REALTIME, &now);
    if (!json) {
        localtime_r(&now.tv_sec, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
        addf(&l, "%s.%03ld [%s] %s", stamp, now.tv_nsec / 1000000L, level_names[level], origin);
        add_message(&l, fmt, ap);
    } else {
        gmtime_r(&now.tv_sec, &tm);
        strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        addf(&l, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":", stamp,
             now.tv_nsec / 1000000L, level_names[level]);
        /* The message is formatted after the line's end, then escaped into place. */
        size_t start = l.len;
        add_message(&l, fmt, ap);
        struct line msg = {.size = sizeof msg.small};
        msg.text = msg.small;
        add(&msg, l.text + start, l.len - start);
        l.len = start;
        add_json_string(&l, msg.text, msg.len);
        if (msg.text != msg.small)
            free(msg.text);
        if (conn != 0)
            addf(&l, ",\"conn\":%llu", (unsigned long long)conn);
        if (peer != NULL) {
            add(&l, ",\"peer\":", 8);
            add_json_string(&l, peer, strlen(peer));
        }
        if (worker > 0)
            addf(&l, ",\"worker\":%d", worker);
        if (script != NULL) {
            add(&l, ",\"script\":", 10);
            add_json_string(&l, script, strlen(script));
        }
        add(&l, "}", 1);
    }
    add(&l, "\n", 1);
    write_line(&l);
    if (l.text != l.small)
        free(l.text);
}

void luasock_log(enum luasock_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, 0, NULL, fmt, ap);
    va_end(ap);
}

void log_conn(enum luasock_log_level level, uint64_t id, const char *peer, const char *fmt, ...)
{
    if (level < min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, id, peer, fmt, ap);
    va_end(ap);
}
