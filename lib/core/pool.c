/* lib/core/pool.c — persistent worker threads: a run publishes (task, user,
   n_tasks) under a mutex, bumps a generation counter and broadcasts; each
   worker w runs tasks w, w + T, ... and the last one to finish signals the
   caller, who ran worker 0's share meanwhile. Both sides first spin briefly
   on the atomic counters (a CNF runs the pool once per right-hand side,
   microseconds apart) before sleeping on the condition variables. */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/layer_impl.h"
#include "nflow/pool.h"

#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
void openblas_set_num_threads(int n);
#endif
#ifdef HAVE_OPENBLAS_GET_NUM_THREADS
int openblas_get_num_threads(void);
#endif

/* One worker: its pool and index, and its outcome of the last run (its
   first failing task and that task's message). */
typedef struct pool_slot {
  struct nf_pool *pool;
  size_t worker;
  size_t failed;           /* index of its first failing task; SIZE_MAX if none */
  nf_status status;
  char msg[512];
} pool_slot;

struct nf_pool {
  size_t threads;
  size_t started;          /* threads created (threads - 1 once made) */
  pthread_t *tid;          /* threads - 1 */
  pool_slot *slot;         /* threads */
  pthread_mutex_t run_lock; /* one run at a time */
  pthread_mutex_t lock;    /* guards what follows */
  pthread_cond_t start, done;
  atomic_ulong generation; /* bumped (under lock) by each run */
  atomic_size_t pending;   /* workers 1..T-1 still running this generation */
  int quit;
  size_t n_tasks;
  nf_pool_task task;
  void *user;
};

/* Multi-thread pools alive, and OpenBLAS's thread count before the first. */
static pthread_mutex_t blas_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t blas_pools;
static int blas_saved = 1;

/* Pins OpenBLAS to one thread while a multi-thread pool lives (delta +1 at
   creation, -1 at freeing; the last restores the saved count). */
static void blas_pool_count(int delta)
{
  pthread_mutex_lock(&blas_lock);
  if (delta > 0 && blas_pools++ == 0) {
#ifdef HAVE_OPENBLAS_GET_NUM_THREADS
    blas_saved = openblas_get_num_threads();
#endif
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1);
#endif
  } else if (delta < 0 && --blas_pools == 0) {
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(blas_saved);
#endif
  }
  (void)blas_saved;
  pthread_mutex_unlock(&blas_lock);
}

/* Worker w's share of a run: tasks w, w + T, ... until its first failure. */
static void run_share(pool_slot *s, size_t n_tasks, nf_pool_task task, void *user)
{
  size_t T = s->pool->threads;
  s->failed = SIZE_MAX;
  s->status = NF_OK;
  for (size_t i = s->worker; i < n_tasks; i += T) {
    nf_status st = task(i, s->worker, user);
    if (st) {
      s->failed = i;
      s->status = st;
      snprintf(s->msg, sizeof s->msg, "%s", nf_errmsg());
      return;
    }
  }
}

/* Loads of an atomic counter a thread spins through before it sleeps. */
#define POOL_SPIN 20000

/* Whether *gen moves past seen within POOL_SPIN loads. */
static int spin_for_generation(const atomic_ulong *gen, unsigned long seen)
{
  for (int i = 0; i < POOL_SPIN; i++)
    if (atomic_load_explicit(gen, memory_order_acquire) != seen) return 1;
  return 0;
}

/* Whether *pending reaches 0 within POOL_SPIN loads. */
static int spin_for_done(const atomic_size_t *pending)
{
  for (int i = 0; i < POOL_SPIN; i++)
    if (atomic_load_explicit(pending, memory_order_acquire) == 0) return 1;
  return 0;
}

/* Thread body of workers 1..T-1: wait for a new generation, run its share, report. */
static void *worker_main(void *arg)
{
  pool_slot *s = arg;
  nf_pool *p = s->pool;
  unsigned long seen = 0;
  for (;;) {
    spin_for_generation(&p->generation, seen);
    pthread_mutex_lock(&p->lock);
    while (!p->quit && atomic_load(&p->generation) == seen)
      pthread_cond_wait(&p->start, &p->lock);
    int quit = p->quit;
    seen = atomic_load(&p->generation);
    size_t n_tasks = p->n_tasks;
    nf_pool_task task = p->task;
    void *user = p->user;
    pthread_mutex_unlock(&p->lock);
    if (quit) break;
    run_share(s, n_tasks, task, user);
    if (atomic_fetch_sub(&p->pending, 1) == 1) { /* the last: wake a sleeping caller */
      pthread_mutex_lock(&p->lock);
      pthread_cond_signal(&p->done);
      pthread_mutex_unlock(&p->lock);
    }
  }
  return NULL;
}

nf_pool *nf_pool_new(size_t n_threads)
{
  if (n_threads == 0 || n_threads > NF_MAX_THREADS) {
    nf_fail(NF_EINVAL, "nf_pool_new: %zu threads, not in [1, %d] (NF_MAX_THREADS)", n_threads,
            NF_MAX_THREADS);
    return NULL;
  }
  nf_pool *p = calloc(1, sizeof *p);
  pool_slot *slot = p ? calloc(n_threads, sizeof *slot) : NULL;
  pthread_t *tid = slot ? calloc(n_threads, sizeof *tid) : NULL;
  if (!tid) {
    free(slot);
    free(p);
    nf_fail(NF_ENOMEM, "nf_pool_new: out of memory for %zu threads", n_threads);
    return NULL;
  }
  p->threads = n_threads;
  atomic_init(&p->generation, 0);
  atomic_init(&p->pending, 0);
  p->slot = slot;
  p->tid = tid;
  pthread_mutex_init(&p->run_lock, NULL);
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->start, NULL);
  pthread_cond_init(&p->done, NULL);
  for (size_t w = 0; w < n_threads; w++) slot[w] = (pool_slot){.pool = p, .worker = w};
  for (size_t w = 1; w < n_threads; w++, p->started++)
    if (pthread_create(&tid[w - 1], NULL, worker_main, &slot[w])) {
      nf_pool_free(p);
      nf_fail(NF_ENOMEM, "nf_pool_new: could not start thread %zu of %zu", w, n_threads);
      return NULL;
    }
  if (n_threads > 1) blas_pool_count(+1);
  return p;
}

void nf_pool_free(nf_pool *pool)
{
  if (!pool) return;
  pthread_mutex_lock(&pool->lock);
  pool->quit = 1;
  pthread_cond_broadcast(&pool->start);
  pthread_mutex_unlock(&pool->lock);
  for (size_t w = 0; w < pool->started; w++) pthread_join(pool->tid[w], NULL);
  if (pool->threads > 1 && pool->started == pool->threads - 1) blas_pool_count(-1);
  pthread_cond_destroy(&pool->start);
  pthread_cond_destroy(&pool->done);
  pthread_mutex_destroy(&pool->lock);
  pthread_mutex_destroy(&pool->run_lock);
  free(pool->tid);
  free(pool->slot);
  free(pool);
}

size_t nf_slice_lo(size_t m, size_t T, size_t s)
{
  return s * (m / T) + (s < m % T ? s : m % T);
}

size_t nf_pool_threads(const nf_pool *pool) { return pool ? pool->threads : 1; }

/* The inline run of a NULL or one-thread pool: tasks in order, the first failure returned. */
static nf_status run_inline(size_t n_tasks, nf_pool_task task, void *user)
{
  for (size_t i = 0; i < n_tasks; i++) {
    nf_status st = task(i, 0, user);
    if (st) return st;
  }
  return NF_OK;
}

nf_status nf_pool_run(const nf_pool *pool, size_t n_tasks, nf_pool_task task, void *user)
{
  if (n_tasks == 0 || !task) return nf_fail(NF_EINVAL, "nf_pool_run: n_tasks is 0 or task is NULL");
  if (!pool || pool->threads == 1) return run_inline(n_tasks, task, user);
  nf_pool *p = (nf_pool *)pool; /* the synchronisation state is the pool's own */
  pthread_mutex_lock(&p->run_lock);
  pthread_mutex_lock(&p->lock);
  p->n_tasks = n_tasks;
  p->task = task;
  p->user = user;
  atomic_store(&p->pending, p->threads - 1);
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->lock);
  run_share(&p->slot[0], n_tasks, task, user);
  if (!spin_for_done(&p->pending)) {
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
  }
  const pool_slot *first = NULL;
  for (size_t w = 0; w < p->threads; w++)
    if (p->slot[w].failed != SIZE_MAX && (!first || p->slot[w].failed < first->failed))
      first = &p->slot[w];
  nf_status st = first ? nf_set_error(first->status, "%s", first->msg) : NF_OK;
  pthread_mutex_unlock(&p->run_lock);
  return st;
}
