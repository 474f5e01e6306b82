/* metrics.h -- a registry of counters, gauges and histograms, and the Prometheus text format.
 *
 * A metric has a fixed list of label names; each combination of label values is a series, made
 * on first use and kept until exit. Updating a series the caller holds is an addition: no
 * lookup, no allocation. The registry outlives script reloads, so a handler asking for the same
 * name again gets the same figures. The core's own figures (metrics_core.c) are written beside
 * the registry's by the same helpers. */
#ifndef METRICS_H
#define METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define METRIC_MAX_LABELS 8
#define METRIC_MAX_BUCKETS 32

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric_series {
    struct metric_series *next;
    double value;      /* counter, gauge; histogram: the sum of the observations */
    uint64_t count;    /* histogram: observations */
    uint64_t *buckets; /* histogram: observations at or below each bound (not cumulative) */
    char labels[];     /* `a="x",b="y"`, escaped; "" without labels */
};

struct metric {
    struct metric *next;
    enum metric_type type;
    char *name, *help;
    size_t label_count;
    char *labels[METRIC_MAX_LABELS];
    size_t bucket_count;
    double bounds[METRIC_MAX_BUCKETS]; /* increasing; +Inf is implied */
    struct metric_series *series;
};

/* Checks a metric or label name against Prometheus's rules. Returns NULL, or why not. */
const char *metrics_check_name(const char *name, bool label);

/* Finds the metric called name, or makes it. Returns NULL with *err when the name is taken by a
 * metric of another type, labels or buckets, or out of memory. */
struct metric *metrics_define(enum metric_type type, const char *name, const char *help,
                              const char *const *labels, size_t label_count,
                              const double *bounds, size_t bucket_count, const char **err);

/* The series of m with these label values (one per label name), made if new. NULL when out of
 * memory. */
struct metric_series *metrics_series(struct metric *m, const char *const *values);

static inline void metrics_add(struct metric_series *s, double v)
{
    s->value += v;
}

void metrics_observe(const struct metric *m, struct metric_series *s, double v);

/* Sets every series to zero. */
void metrics_reset(void);

/* Writes every registered metric to out. */
void metrics_write_all(FILE *out);

/* The pieces of the text format (version 0.0.4), for figures kept outside the registry. */
void metrics_write_header(FILE *out, const char *name, const char *help, enum metric_type type);
void metrics_write_sample(FILE *out, const char *name, const char *labels, double value);

/* Appends `name="value"` (escaped) to a label text of size bytes, with a comma if needed. */
void metrics_append_label(char *text, size_t size, const char *name, const char *value);

#endif
