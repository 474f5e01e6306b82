/* check.h -- a minimal assertion helper for the C unit tests: each failed CHECK prints where,
 * and the test exits with the number of failures so ctest reports it. */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        check_count++;                                                                     \
        if (!(cond)) {                                                                     \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);        \
        }                                                                                  \
    } while (0)

#define CHECK_STR(got, want) CHECK(strcmp((got), (want)) == 0)

static inline int check_report(void)
{
    printf("%d passed, %d failed\n", check_count - check_failures, check_failures);
    return check_failures != 0;
}

#endif
