/* replay.c -- runs a fuzz target's LLVMFuzzerTestOneInput once on every file given or found in
 * the directories given, without libFuzzer: the seed corpus and the crashes found earlier
 * (regressions/) become a regression test of the normal build (ctest -R fuzz).
 *
 *   fuzz_replay_codec tests/fuzz/corpus/codec tests/fuzz/regressions/codec
 *
 * Each input runs in a child process, so one that crashes or breaks an invariant (abort) is
 * named and counted and the others still run. A directory that does not exist is skipped (a
 * target may have no regressions yet); no input at all is a failure. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

static int passed, failed;

/* Reads a whole file into an allocation of exactly its size; NULL on error. */
static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size >= 0) {
        len = (size_t)st.st_size;
        data = malloc(len > 0 ? len : 1);
        if (data != NULL && fread(data, 1, len, f) != len) {
            free(data);
            data = NULL;
        }
    }
    fclose(f);
    *size = len;
    return data;
}

static void run_one(const char *path)
{
    size_t size;
    uint8_t *data = read_file(path, &size);
    if (data == NULL) {
        fprintf(stderr, "FAILED %s: cannot read: %s\n", path, strerror(errno));
        failed++;
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        exit(0);
    }
    free(data);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        fprintf(stderr, "FAILED %s: fork/wait: %s\n", path, strerror(errno));
        failed++;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        passed++;
    } else {
        if (WIFSIGNALED(status))
            fprintf(stderr, "FAILED %s: killed by signal %d\n", path, WTERMSIG(status));
        else
            fprintf(stderr, "FAILED %s: exit status %d\n", path, WEXITSTATUS(status));
        failed++;
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every file of dir (not its dot files), in name order so that runs are alike. */
static void run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "cannot open %s: %s\n", dir, strerror(errno));
        failed++;
        return;
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, cap * sizeof *names);
            FUZZ_CHECK(names != NULL);
        }
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        names[count] = malloc(n);
        FUZZ_CHECK(names[count] != NULL);
        snprintf(names[count++], n, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (count > 0)
        qsort(names, count, sizeof *names, by_name);
    for (size_t i = 0; i < count; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
            run_one(names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            run_dir(argv[i]);
        else
            run_one(argv[i]);
    }
    if (passed + failed == 0) {
        fprintf(stderr, "no inputs found\n");
        failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
