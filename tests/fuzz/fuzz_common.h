/* tests/fuzz/fuzz_common.h — what the libFuzzer targets share: the input as a
   file (a memfd, so no disk traffic), a low allocation limit, and the checks
   every reader's answer must pass. Included once by each fuzz_X.c. */
#ifndef NFLOW_FUZZ_COMMON_H
#define NFLOW_FUZZ_COMMON_H

#define _GNU_SOURCE /* memfd_create */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nflow.h"

/* The readers' allocation cap during fuzzing: far below -rss_limit_mb=2048. */
#define FUZZ_ALLOC_LIMIT ((size_t)256 << 20)

/* Stops the run (a crash libFuzzer records) with a note on stderr if !ok. */
#define FUZZ_CHECK(ok, ...)                                                                  \
  do {                                                                                       \
    if (!(ok)) {                                                                             \
      fprintf(stderr, "fuzz check failed: " __VA_ARGS__);                                  \
      fprintf(stderr, "\n");                                                                 \
      abort();                                                                               \
    }                                                                                        \
  } while (0)

/* Sets the allocation limit once, before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc, (void)argv;
  nf_set_alloc_limit(FUZZ_ALLOC_LIMIT);
  return 0;
}

/* A path naming a file that holds exactly data[0..size) (one memfd, rewritten each call). */
static inline const char *fuzz_file(const uint8_t *data, size_t size)
{
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    fd = memfd_create("nflow-fuzz", 0);
    FUZZ_CHECK(fd >= 0, "memfd_create failed");
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  FUZZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate failed");
  for (size_t done = 0; done < size;) {
    ssize_t k = pwrite(fd, data + done, size - done, (off_t)done);
    FUZZ_CHECK(k > 0, "pwrite failed");
    done += (size_t)k;
  }
  return path;
}

/* A failure's message names the file first ("path: ..." or "path:line:...")
   unless memory ran out; a success sets nothing to check here. */
static inline void fuzz_check_failure(nf_status st, const char *path)
{
  if (st == NF_OK || st == NF_ENOMEM) return;
  FUZZ_CHECK(strncmp(nf_errmsg(), path, strlen(path)) == 0 &&
                 (nf_errmsg()[strlen(path)] == ':'),
             "%s: message does not start with the path: %s", nf_status_str(st), nf_errmsg());
}

/* Checks a data set reader's answer: on success a non-empty set of finite
   values, on failure the output untouched and the message naming the file. */
static inline void fuzz_check_dataset(nf_status st, const char *path, nf_dataset *ds,
                                      const nf_dataset *untouched)
{
  fuzz_check_failure(st, path);
  if (st != NF_OK) {
    FUZZ_CHECK(ds == untouched, "output set on failure (%s)", nf_errmsg());
    return;
  }
  FUZZ_CHECK(ds && ds->n > 0 && ds->dim > 0 && ds->x, "empty set on success");
  for (size_t i = 0; i < ds->n * ds->dim; i++)
    FUZZ_CHECK(isfinite(ds->x[i]), "value %zu is not finite", i);
  nf_dataset_free(ds);
}

#endif
