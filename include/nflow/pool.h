/* nflow/pool.h — a pool of worker threads (POSIX threads) that splits one
   call's work into tasks, as the threaded flow workspaces and the CNF do.

   A pool of T threads runs T - 1 persistent threads; the thread calling
   nf_pool_run is worker 0. Task i always runs on worker i % T, so for a
   fixed thread count every task sees the same worker (and that worker's
   scratch) from run to run: results do not depend on thread timing.

   BLAS and OPENBLAS_NUM_THREADS: OPENBLAS_NUM_THREADS (or
   openblas_set_num_threads) sets OpenBLAS's own threads, used inside each
   dgemm. A one-thread pool leaves that setting alone. While at least one
   pool of more than one thread exists, OpenBLAS runs single-threaded (the
   first such pool calls openblas_set_num_threads(1), remembering the count
   it found, and the last one freed restores that count), so the pool's
   workers do not oversubscribe the cores with BLAS's own threads. A program
   that changes OpenBLAS's thread count while such a pool lives gets its
   setting overwritten when the last pool is freed. Built against a BLAS
   without openblas_set_num_threads, pools do not touch BLAS threading. */
#ifndef NFLOW_POOL_H
#define NFLOW_POOL_H

#include <stddef.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest thread count a pool (and a threaded workspace) accepts. */
#define NF_MAX_THREADS 256

typedef struct nf_pool nf_pool;

/* One task of a run: index in [0, n_tasks), worker in [0, T) (index % T).
   Returns NF_OK, or a status with its message set by nf_set_error. */
typedef nf_status (*nf_pool_task)(size_t index, size_t worker, void *user);

/* A pool of n_threads workers (n_threads - 1 new threads). NULL with
   nf_errmsg on n_threads == 0, n_threads > NF_MAX_THREADS, or a failure to
   allocate or start the threads. */
nf_pool *nf_pool_new(size_t n_threads);

/* Stops and joins the threads and frees the pool; NULL is a no-op. No run
   may be in progress. */
void nf_pool_free(nf_pool *pool);

/* Its thread count T (1 for NULL). */
size_t nf_pool_threads(const nf_pool *pool);

/* Runs task(i, i % T, user) for i = 0, ..., n_tasks - 1 and waits for all
   of them. Each worker runs its tasks in increasing order and stops at its
   first failure. Returns NF_OK, or the status of the lowest-indexed failing
   task with that task's message moved into the calling thread's nf_errmsg
   (tasks above it on other workers may have run). A NULL pool or a pool of
   one thread runs the tasks inline, in order. No allocation per run.
   Thread-safe: runs on one pool from several threads are serialised by a
   mutex (one run at a time); a task must not run the pool it runs in
   (that deadlocks). n_tasks == 0 or a NULL task: NF_EINVAL. */
nf_status nf_pool_run(const nf_pool *pool, size_t n_tasks, nf_pool_task task, void *user);

#ifdef __cplusplus
}
#endif
#endif
