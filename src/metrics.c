/* metrics.c -- the metric registry and the text format; see metrics.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "metrics.h"

static struct metric *head, *tail;

const char *metrics_check_name(const char *name, bool label)
{
    if (name[0] == '\0')
        return "empty";
    for (const char *p = name; *p != '\0'; p++) {
        char ch = *p;
        bool letter = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        bool ok = letter || (p > name && ch >= '0' && ch <= '9') || (!label && ch == ':');
        if (!ok)
            return label ? "a label name is letters, digits and '_', not starting with a digit"
                         : "a metric name is letters, digits, '_' and ':', not starting with a "
                           "digit";
    }
    if (label && strncmp(name, "__", 2) == 0)
        return "label names starting with '__' are reserved";
    return NULL;
}

static struct metric *find(const char *name)
{
    for (struct metric *m = head; m != NULL; m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

static bool same_shape(const struct metric *m, enum metric_type type, const char *const *labels,
                       size_t label_count, const double *bounds, size_t bucket_count)
{
    if (m->type != type || m->label_count != label_count || m->bucket_count != bucket_count)
        return false;
    for (size_t i = 0; i < label_count; i++)
        if (strcmp(m->labels[i], labels[i]) != 0)
            return false;
    for (size_t i = 0; i < bucket_count; i++)
        if (m->bounds[i] != bounds[i])
            return false;
    return true;
}

static void free_metric(struct metric *m)
{
    free(m->name);
    free(m->help);
    for (size_t i = 0; i < m->label_count; i++)
        free(m->labels[i]);
    free(m);
}

struct metric *metrics_define(enum metric_type type, const char *name, const char *help,
                              const char *const *labels, size_t label_count,
                              const double *bounds, size_t bucket_count, const char **err)
{
    struct metric *m = find(name);
    if (m != NULL) {
        if (same_shape(m, type, labels, label_count, bounds, bucket_count))
            return m;
        *err = "already defined with another type, labels or buckets";
        return NULL;
    }
    *err = ERR_NO_MEMORY;
    if (label_count > METRIC_MAX_LABELS || bucket_count > METRIC_MAX_BUCKETS)
        return NULL;
    m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help);
    bool ok = m->name != NULL && m->help != NULL;
    for (size_t i = 0; i < label_count; i++) {
        m->labels[m->label_count] = strdup(labels[i]);
        ok = ok && m->labels[m->label_count++] != NULL;
    }
    if (!ok) {
        free_metric(m);
        return NULL;
    }
    m->bucket_count = bucket_count;
    if (bucket_count > 0)
        memcpy(m->bounds, bounds, bucket_count * sizeof *bounds);
    if (tail != NULL)
        tail->next = m;
    else
        head = m;
    tail = m;
    return m;
}

static void append(char *text, size_t size, size_t *len, char ch)
{
    if (*len + 1 < size)
        text[(*len)++] = ch;
    text[*len] = '\0';
}

void metrics_append_label(char *text, size_t size, const char *name, const char *value)
{
    size_t len = strlen(text);
    if (len > 0)
        append(text, size, &len, ',');
    for (const char *p = name; *p != '\0'; p++)
        append(text, size, &len, *p);
    append(text, size, &len, '=');
    append(text, size, &len, '"');
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n')
            append(text, size, &len, '\\');
        append(text, size, &len, *p == '\n' ? 'n' : *p);
    }
    append(text, size, &len, '"');
}

struct metric_series *metrics_series(struct metric *m, const char *const *values)
{
    char labels[1024] = "";
    for (size_t i = 0; i < m->label_count; i++)
        metrics_append_label(labels, sizeof labels, m->labels[i], values[i]);
    struct metric_series **at = &m->series;
    for (; *at != NULL; at = &(*at)->next)
        if (strcmp((*at)->labels, labels) == 0)
            return *at;
    size_t len = strlen(labels) + 1;
    struct metric_series *s = calloc(1, sizeof *s + len);
    if (s == NULL)
        return NULL;
    memcpy(s->labels, labels, len);
    if (m->type == METRIC_HISTOGRAM) {
        s->buckets = calloc(m->bucket_count + 1, sizeof *s->buckets);
        if (s->buckets == NULL) {
            free(s);
            return NULL;
        }
    }
    *at = s;
    return s;
}

void metrics_observe(const struct metric *m, struct metric_series *s, double v)
{
    size_t i = 0;
    while (i < m->bucket_count && v > m->bounds[i])
        i++;
    s->buckets[i]++;
    s->count++;
    s->value += v;
}

static const char *const type_names[] = {"counter", "gauge", "histogram"};

void metrics_write_header(FILE *out, const char *name, const char *help, enum metric_type type)
{
    fprintf(out, "# HELP %s ", name);
    for (const char *p = help; *p != '\0'; p++) {
        if (*p == '\\')
            fputs("\\\\", out);
        else if (*p == '\n')
            fputs("\\n", out);
        else
            fputc(*p, out);
    }
    fprintf(out, "\n# TYPE %s %s\n", name, type_names[type]);
}

/* The shortest text that reads back as value: 0.005 rather than 0.0050000000000000001. */
static void format_number(char *out, size_t size, double value)
{
    if (isnan(value))
        snprintf(out, size, "NaN");
    else if (isinf(value))
        snprintf(out, size, value > 0 ? "+Inf" : "-Inf");
    else if (snprintf(out, size, "%.15g", value) > 0 && strtod(out, NULL) != value)
        snprintf(out, size, "%.17g", value);
}

static void write_number(FILE *out, double value)
{
    char text[40];
    format_number(text, sizeof text, value);
    fputs(text, out);
}

void metrics_write_sample(FILE *out, const char *name, const char *labels, double value)
{
    fputs(name, out);
    if (labels[0] != '\0')
        fprintf(out, "{%s}", labels);
    fputc(' ', out);
    write_number(out, value);
    fputc('\n', out);
}

static void write_histogram(FILE *out, const struct metric *m, const struct metric_series *s)
{
    char name[300], labels[1100], bound[64];
    snprintf(name, sizeof name, "%s_bucket", m->name);
    uint64_t seen = 0;
    for (size_t i = 0; i <= m->bucket_count; i++) {
        seen += s->buckets[i];
        format_number(bound, sizeof bound, i < m->bucket_count ? m->bounds[i] : INFINITY);
        snprintf(labels, sizeof labels, "%s", s->labels);
        metrics_append_label(labels, sizeof labels, "le", bound);
        metrics_write_sample(out, name, labels, (double)seen);
    }
    snprintf(name, sizeof name, "%s_sum", m->name);
    metrics_write_sample(out, name, s->labels, s->value);
    snprintf(name, sizeof name, "%s_count", m->name);
    metrics_write_sample(out, name, s->labels, (double)s->count);
}

void metrics_reset(void)
{
    for (struct metric *m = head; m != NULL; m = m->next)
        for (struct metric_series *s = m->series; s != NULL; s = s->next) {
            s->value = 0;
            s->count = 0;
            if (s->buckets != NULL)
                memset(s->buckets, 0, (m->bucket_count + 1) * sizeof *s->buckets);
        }
}

void metrics_write_all(FILE *out)
{
    for (const struct metric *m = head; m != NULL; m = m->next) {
        metrics_write_header(out, m->name, m->help, m->type);
        for (const struct metric_series *s = m->series; s != NULL; s = s->next)
            if (m->type == METRIC_HISTOGRAM)
                write_histogram(out, m, s);
            else
                metrics_write_sample(out, m->name, s->labels, s->value);
    }
}
