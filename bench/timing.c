/* bench/timing.c — wall-clock medians and the machine's dgemm rate. */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <stdlib.h>
#include <time.h>

#include <cblas.h>

#include "timing.h"

double bench_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(double *t, size_t n)
{
  qsort(t, n, sizeof *t, cmp_double);
  return t[n / 2];
}

double bench_median_time(void (*fn)(void *), void *arg, int reps, int calls)
{
  double *t = malloc((size_t)reps * sizeof *t);
  for (int r = 0; r < reps; r++) {
    double t0 = bench_now();
    for (int c = 0; c < calls; c++) fn(arg);
    t[r] = (bench_now() - t0) / calls;
  }
  double m = bench_median(t, (size_t)reps);
  free(t);
  return m;
}

typedef struct square {
  int n;
  double *a, *c;
} square;

static void square_dgemm(void *arg)
{
  square *s = arg;
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->n, s->n, 1.0, s->a, s->n,
              s->a, s->n, 0.0, s->c, s->n);
}

double bench_dgemm_gflops(int n, int reps)
{
  square s = {n, malloc((size_t)n * n * sizeof(double)), malloc((size_t)n * n * sizeof(double))};
  for (size_t i = 0; i < (size_t)n * n; i++) s.a[i] = 1.0 / (double)(i % 97 + 1);
  square_dgemm(&s); /* warm up */
  double sec = bench_median_time(square_dgemm, &s, reps, 1);
  free(s.a);
  free(s.c);
  return 2.0 * n * (double)n * n / sec * 1e-9;
}

double bench_mlp_macs(size_t in, size_t n_hidden, const size_t *hidden, size_t out)
{
  double macs = 0;
  size_t prev = in;
  for (size_t l = 0; l < n_hidden; l++) {
    macs += (double)prev * (double)hidden[l];
    prev = hidden[l];
  }
  return macs + (double)prev * (double)out;
}

void bench_one_thread(void)
{
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
  openblas_set_num_threads(1);
#endif
}
