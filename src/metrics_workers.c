/* metrics_workers.c -- the workers' figures gathered in the parent; see metrics_workers.h.
 *
 * The parent reads the workers' texts back as text (the format metrics.c writes: HELP and TYPE
 * lines, then `name{labels} value` lines), so whatever a worker shows, handlers' metrics
 * included, is gathered without a second encoding. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics_core.h"
#include "metrics_workers.h"
#include "workers.h"

#define MAX_TEXT (1024 * 1024)

struct row {
    char *key; /* `name{labels}` without the worker label */
    int slot;  /* a worker's number; 0: the total; -1: the parent's own */
    double value;
};

struct family {
    char *name, *help, *type;
    bool counts; /* a counter or a histogram: never goes backwards */
    struct row *rows;
    size_t len, cap;
};

struct table {
    struct family *families;
    size_t len, cap;
};

struct slot {
    char *text; /* its last figures */
    char *base; /* the counters of its dead predecessors, summed */
};

static struct ev_loop *loop;
static int channel[2] = {-1, -1}; /* [0]: the parent reads; [1]: the workers send */
static ev_io receiving;
static ev_timer sending;
static struct slot *slots;
static int slot_count;
static int my_id;
static char *received;

static bool grow(void **items, size_t *cap, size_t len, size_t size)
{
    if (len < *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 16;
    void *more = realloc(*items, n * size);
    if (more == NULL)
        return false;
    *items = more;
    *cap = n;
    return true;
}

static struct family *family(struct table *t, const char *name)
{
    for (size_t i = 0; i < t->len; i++)
        if (strcmp(t->families[i].name, name) == 0)
            return &t->families[i];
    if (!grow((void **)&t->families, &t->cap, t->len, sizeof *t->families))
        return NULL;
    struct family *f = &t->families[t->len];
    *f = (struct family){.name = strdup(name)};
    if (f->name == NULL)
        return NULL;
    t->len++;
    return f;
}

static void add(struct family *f, const char *key, int slot, double value)
{
    for (size_t i = 0; i < f->len; i++)
        if (f->rows[i].slot == slot && strcmp(f->rows[i].key, key) == 0) {
            f->rows[i].value += value;
            return;
        }
    if (!grow((void **)&f->rows, &f->cap, f->len, sizeof *f->rows))
        return;
    char *copy = strdup(key);
    if (copy != NULL)
        f->rows[f->len++] = (struct row){.key = copy, .slot = slot, .value = value};
}

/* "# HELP name text" or "# TYPE name type": the family, with its help or type set. */
static struct family *header(struct table *t, char *line)
{
    bool help = strncmp(line, "# HELP ", 7) == 0;
    if (!help && strncmp(line, "# TYPE ", 7) != 0)
        return NULL;
    char *name = line + 7, *rest = strchr(name, ' ');
    if (rest == NULL)
        return NULL;
    *rest++ = '\0';
    struct family *f = family(t, name);
    char **field = f == NULL ? NULL : help ? &f->help : &f->type;
    if (field != NULL && *field == NULL) {
        *field = strdup(rest);
        if (!help)
            f->counts = strcmp(rest, "counter") == 0 || strcmp(rest, "histogram") == 0;
    }
    return f;
}

/* Adds the samples of text to t as slot's, and to the totals unless slot is the parent's;
 * counts_only: those of counters and histograms alone. */
static void collect(struct table *t, const char *text, int slot, bool counts_only)
{
    char *copy = text != NULL ? strdup(text) : NULL;
    struct family *current = NULL;
    char *save = NULL;
    for (char *line = copy ? strtok_r(copy, "\n", &save) : NULL; line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            struct family *f = header(t, line);
            current = f != NULL ? f : current;
            continue;
        }
        char *space = strrchr(line, ' ');
        if (current == NULL || space == NULL || (counts_only && !current->counts))
            continue;
        *space = '\0';
        double value = strtod(space + 1, NULL);
        add(current, line, slot, value);
        /* A sum of the workers' start times or file descriptors says nothing, and a reload is
         * the parent's first (a failed one goes no further): process_* and reloads are shown
         * per worker, and the parent's own without a label. */
        if (slot > 0 && strncmp(current->name, "process_", 8) != 0 &&
            strcmp(current->name, "luasock_reloads_total") != 0)
            add(current, line, 0, value);
    }
    free(copy);
}

static void write_key(FILE *out, const char *key, int slot)
{
    const char *brace = strchr(key, '{');
    if (slot <= 0)
        fputs(key, out);
    else if (brace == NULL)
        fprintf(out, "%s{worker=\"%d\"}", key, slot);
    else
        fprintf(out, "%.*s,worker=\"%d\"}", (int)(strlen(key) - 1), key, slot);
}

static void write_value(FILE *out, double value)
{
    char text[40];
    snprintf(text, sizeof text, "%.15g", value);
    if (strtod(text, NULL) != value)
        snprintf(text, sizeof text, "%.17g", value);
    fputs(text, out);
}

/* Writes t: every family's totals (and the parent's own rows), then each worker's rows with a
 * worker label (labelled: else without, as a base text). */
static void render(const struct table *t, FILE *out, bool labelled)
{
    for (size_t i = 0; i < t->len; i++) {
        const struct family *f = &t->families[i];
        if (f->len == 0)
            continue;
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help ? f->help : "", f->name,
                f->type ? f->type : "untyped");
        for (int pass = 0; pass < 2; pass++)
            for (size_t r = 0; r < f->len; r++) {
                const struct row *row = &f->rows[r];
                if ((row->slot > 0) != (pass == 1))
                    continue;
                write_key(out, row->key, labelled ? row->slot : 0);
                fputc(' ', out);
                write_value(out, row->value);
                fputc('\n', out);
            }
    }
}

static void free_table(struct table *t)
{
    for (size_t i = 0; i < t->len; i++) {
        struct family *f = &t->families[i];
        for (size_t r = 0; r < f->len; r++)
            free(f->rows[r].key);
        free(f->rows);
        free(f->name);
        free(f->help);
        free(f->type);
    }
    free(t->families);
}

void metrics_workers_write(FILE *out)
{
    struct table t = {0};
    for (int i = 0; i < slot_count; i++) {
        collect(&t, slots[i].base, i + 1, true);
        collect(&t, slots[i].text, i + 1, false);
    }
    char *own = NULL;
    size_t len;
    FILE *process = open_memstream(&own, &len);
    if (process != NULL) {
        metrics_core_write_process(process);
        if (fclose(process) == 0)
            collect(&t, own, -1, false);
    }
    free(own);
    render(&t, out, true);
    free_table(&t);
}

void metrics_workers_exited(int id)
{
    struct slot *s = &slots[id - 1];
    struct table t = {0};
    collect(&t, s->base, -1, true);
    collect(&t, s->text, -1, true);
    char *base = NULL;
    size_t len;
    FILE *out = open_memstream(&base, &len);
    if (out != NULL) {
        render(&t, out, false);
        if (fclose(out) == 0) {
            free(s->base);
            s->base = base;
            base = NULL;
        }
    }
    free(base);
    free_table(&t);
    free(s->text);
    s->text = NULL;
}

/* A worker's text: "ID PID\n" and its figures. One from a worker that has died since it sent
 * it is dropped: its figures are in the base already. */
static void on_received(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    for (;;) {
        ssize_t n = recv(channel[0], received, MAX_TEXT, MSG_DONTWAIT);
        if (n <= 0)
            return;
        received[n] = '\0';
        int id, skip = 0;
        long pid;
        if (sscanf(received, "%d %ld\n%n", &id, &pid, &skip) != 2 || skip == 0 || id < 1 ||
            id > slot_count || workers_pid(id) != (pid_t)pid)
            continue;
        char *text = strdup(received + skip);
        if (text == NULL)
            continue;
        free(slots[id - 1].text);
        slots[id - 1].text = text;
    }
}

static void send_figures(void)
{
    char *text = NULL;
    size_t len;
    FILE *out = open_memstream(&text, &len);
    if (out == NULL)
        return;
    fprintf(out, "%d %ld\n", my_id, (long)getpid());
    metrics_core_write(out);
    if (fclose(out) == 0 && len <= MAX_TEXT)
        send(channel[1], text, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    free(text);
}

static void on_send(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    send_figures();
}

int metrics_workers_init(struct ev_loop *l, int count)
{
    loop = l;
    slots = calloc((size_t)count, sizeof *slots);
    received = malloc(MAX_TEXT + 1);
    if (slots == NULL || received == NULL ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) < 0)
        return -1;
    int size = 4 * MAX_TEXT;
    setsockopt(channel[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    setsockopt(channel[0], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    slot_count = count;
    workers_on_exit = metrics_workers_exited;
    ev_io_init(&receiving, on_received, channel[0], EV_READ);
    ev_io_start(loop, &receiving);
    return 0;
}

void metrics_workers_become(int id)
{
    ev_io_stop(loop, &receiving);
    close(channel[0]);
    channel[0] = -1;
    for (int i = 0; i < slot_count; i++) {
        free(slots[i].text);
        free(slots[i].base);
    }
    free(slots);
    slots = NULL;
    slot_count = 0;
    free(received);
    received = NULL;
    workers_on_exit = NULL;
    my_id = id;
    metrics_core_reset();
    send_figures();
    ev_timer_init(&sending, on_send, METRICS_WORKERS_PERIOD, METRICS_WORKERS_PERIOD);
    ev_timer_start(loop, &sending);
    /* Sending is no reason for a worker's loop to go on. */
    ev_unref(loop);
}
