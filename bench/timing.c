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

/* An n x n product a a in double or float (one buffer pair, either type). */
typedef struct square {
  int n, single;
  void *a, *c;
} square;

static void square_gemm(void *arg)
{
  square *s = arg;
  if (s->single)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->n, s->n, 1.0f, s->a, s->n,
                s->a, s->n, 0.0f, s->c, s->n);
  else
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->n, s->n, 1.0, s->a, s->n,
                s->a, s->n, 0.0, s->c, s->n);
}

/* GFLOP/s (2 n^3 flops per product) of the median of reps products. */
static double gemm_gflops(int n, int reps, int single)
{
  size_t size = single ? sizeof(float) : sizeof(double), nn = (size_t)n * n;
  square s = {n, single, malloc(nn * size), malloc(nn * size)};
  for (size_t i = 0; i < nn; i++) {
    if (single) ((float *)s.a)[i] = 1.0f / (float)(i % 97 + 1);
    else ((double *)s.a)[i] = 1.0 / (double)(i % 97 + 1);
  }
  square_gemm(&s); /* warm up */
  double sec = bench_median_time(square_gemm, &s, reps, 1);
  free(s.a);
  free(s.c);
  return 2.0 * n * (double)n * n / sec * 1e-9;
}

double bench_dgemm_gflops(int n, int reps) { return gemm_gflops(n, reps, 0); }

double bench_sgemm_gflops(int n, int reps) { return gemm_gflops(n, reps, 1); }

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
