/* bench/timing.h — wall-clock medians and the machine's dgemm rate, measured in
   the same run as the figure they are compared with. */
#ifndef NFLOW_BENCH_TIMING_H
#define NFLOW_BENCH_TIMING_H

#include <stddef.h>

/* Monotonic wall-clock time in seconds. */
double bench_now(void);

/* Median of t[0..n) (sorts t). */
double bench_median(double *t, size_t n);

/* Median over reps repetitions of the time per call of `calls` calls of fn(arg). */
double bench_median_time(void (*fn)(void *), void *arg, int reps, int calls);

/* Multiply-adds of one row through an MLP in -> hidden[0..n_hidden) -> out
   (sum of in*out over its weight matrices). */
double bench_mlp_macs(size_t in, size_t n_hidden, const size_t *hidden, size_t out);

/* One BLAS thread (when the BLAS lets itself be told so). */
void bench_one_thread(void);

/* GFLOP/s of a square dgemm of order n at the current BLAS thread count (median of reps). */
double bench_dgemm_gflops(int n, int reps);

/* The same for sgemm: the rate single-precision networks are compared with. */
double bench_sgemm_gflops(int n, int reps);

#endif
