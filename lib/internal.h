/* lib/internal.h — helpers shared by the library's sources (not installed). */
#ifndef NFLOW_INTERNAL_H
#define NFLOW_INTERNAL_H

#include <stddef.h>
#include "nflow/status.h"

#if defined(__GNUC__)
#define NF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define NF_PRINTF(a, b)
#endif

/* Elementwise loops over whole batches: compiled for AVX2 and AVX-512 as well,
   the best chosen at load time (GCC function multiversioning), as OpenBLAS
   does for its kernels. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(__clang__)
#define NF_VECTOR_LOOP __attribute__((target_clones("default", "avx2", "avx512f")))
#else
#define NF_VECTOR_LOOP
#endif

/* Records a printf-style detail for nf_errmsg() and returns status. */
nf_status nf_fail(nf_status status, const char *fmt, ...) NF_PRINTF(2, 3);

/* Index of the first non-finite entry among n values, or n if all are finite. */
size_t nf_first_nonfinite(size_t n, const double *v);

/* Stable log(1 + exp(x)). */
double nf_softplus(double x);

/* Logistic sigmoid 1 / (1 + exp(-x)), stable for large |x|. */
double nf_sigmoid(double x);

/* calloc of n doubles with overflow check; NULL on failure. */
double *nf_dalloc(size_t n);

#endif
