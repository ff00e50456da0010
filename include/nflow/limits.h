/* nflow/limits.h — a process-wide cap on the memory the file readers reserve
   for one file, so that a malformed or hostile file (a header claiming a huge
   shape, an endless line) fails cleanly instead of exhausting memory. */
#ifndef NFLOW_LIMITS_H
#define NFLOW_LIMITS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets the cap, in bytes, on what a reader (nf_dataset_read_csv,
   nf_dataset_read_npy, nf_flow_load) may hold for one file's contents at once:
   a reader that would need more fails with NF_ENOMEM, "path: needs N bytes,
   more than the allocation limit of L bytes", before allocating them. 0 (the
   default) means no limit. Process-wide; thread-safe (atomic), and a reader
   already running may see the old or the new value. */
void nf_set_alloc_limit(size_t bytes);

/* The current cap in bytes (0: no limit). */
size_t nf_alloc_limit(void);

#ifdef __cplusplus
}
#endif
#endif
