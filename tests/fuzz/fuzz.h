/* fuzz.h -- shared by the libFuzzer targets in this directory and by replay.c.
 *
 * Each fuzz_*.c defines LLVMFuzzerTestOneInput. Built with clang -fsanitize=fuzzer it is a
 * libFuzzer target (scripts/fuzz); linked with replay.c it is a plain program that runs the
 * checked-in corpus once in the normal build (ctest -R fuzz). A broken invariant aborts, so both
 * report it as a crash, with the failed condition on stderr. */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);    \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#endif
