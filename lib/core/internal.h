/* lib/internal.h — helpers shared by the library's sources (not installed). */
#ifndef NFLOW_INTERNAL_H
#define NFLOW_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "nflow/config.h"
#include "nflow/layer_impl.h"
#include "nflow/mlp.h"
#include "nflow/precision.h"
#include "nflow/rng.h"
#include "nflow/status.h"

/* Everything declared here is internal: hidden from the shared library's
   exported symbols (tests that need it link the static library). */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#if defined(__GNUC__)
#define NF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define NF_PRINTF(a, b)
#endif

/* Elementwise loops over whole batches: compiled for AVX2 and AVX-512 as well,
   the best chosen at load time (GCC function multiversioning), as OpenBLAS
   does for its kernels.
   Not under ThreadSanitizer: the clones' ifunc resolvers would be
   instrumented and run before TSan is initialised (a crash at load time). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__)
#define NF_VECTOR_LOOP __attribute__((target_clones("default", "avx2", "avx512f")))
#else
#define NF_VECTOR_LOOP
#endif

/* Records a printf-style detail for nf_errmsg() and status for
   nf_last_status(), and returns status: the public nf_set_error (layer_impl.h). */
#define nf_fail nf_set_error

/* *index = position of name in table[0..k); else NF_EINVAL with
   "unknown <what> '<name>' (expected a, b, ...)" (also for a NULL name or index). */
nf_status nf_parse_choice(const char *what, const char *name, const char *const *table,
                          size_t k, int *index);

/* nf_mlp_init with LeCun-uniform hidden layers (bound 1 / sqrt(fan_in),
   PyTorch's nn.Linear default) instead of He / Glorot (lib/nets/mlp.c). */
void nf_mlp_init_lecun(const nf_mlp *mlp, nf_rng *rng, double out_scale, double *params);

/* The single-precision passes of nf_mlp on weights already converted to
   float (n_params floats, e.g. MADE's masked weights, converted once per
   parameter vector): nf_mlp_forward_single converts x, runs the float pass and
   writes y as doubles; nf_mlp_backward_single reads the float input the last
   forward left in work, writes g_x (NULL: not wanted) and ADDS into g_params
   (NULL: not wanted). work: nf_mlp_single_work_size(mlp, n) doubles (SIZE_MAX
   on overflow). No argument checks. */
size_t nf_mlp_single_work_size(const nf_mlp *mlp, size_t n);
void nf_mlp_forward_single(const nf_mlp *mlp, const float *params, size_t n, const double *x,
                           double *y, double *work);
void nf_mlp_backward_single(const nf_mlp *mlp, const float *params, size_t n, const double *g_y,
                            double *g_x, double *g_params, double *work);

/* A layer's network precision in its configuration: nf_precision_save writes
   the key "precision" only for single (files without it load as double);
   nf_precision_load reads it (double when absent), NF_EFORMAT naming the key
   on another value. */
nf_status nf_precision_save(nf_config *cfg, nf_precision precision);
nf_status nf_precision_load(const nf_config *cfg, nf_precision *precision);

/* NF_OK for a known nf_precision, else NF_EINVAL "fn: unknown precision N". */
nf_status nf_check_precision(const char *fn, nf_precision precision);

/* out[i] = (float)in[i] for n values: single-precision networks convert their
   weights once per call (nflow/precision.h). */
void nf_to_float(size_t n, const double *in, float *out);

/* out[i] += in[i] for n values: float results accumulated in double. */
void nf_add_float(size_t n, const float *in, double *out);

/* Index of the first non-finite entry among n values, or n if all are finite. */
size_t nf_first_nonfinite(size_t n, const double *v);

/* Stable log(1 + exp(x)). */
double nf_softplus(double x);

/* Logistic sigmoid 1 / (1 + exp(-x)), stable for large |x|. */
double nf_sigmoid(double x);

/* Cody-Waite reduction y = k ln2 + r, |r| <= ln2/2 (k by the 1.5 * 2^52
   rounding trick, ln2 in two parts so r is exact), for y in [-708, 0]: writes
   r and returns 2^k assembled in the exponent bits; branch-free, so batch loops
   that call it vectorise. */
static inline double nf_exp_reduce(double y, double *r)
{
  const double shifter = 0x1.8p52, log2e = 1.4426950408889634;
  const double ln2_hi = 0x1.62e42fefa3800p-1, ln2_lo = 0x1.ef35793c76730p-45;
  double kf = y * log2e + shifter;
  double k = kf - shifter;
  *r = (y - k * ln2_hi) - k * ln2_lo;
  uint64_t kbits, sbits = 0x4338000000000000ULL; /* bits of the shifter */
  memcpy(&kbits, &kf, sizeof kbits);
  uint64_t scale_bits = (kbits - sbits + 1023) << 52;
  double scale;
  memcpy(&scale, &scale_bits, sizeof scale);
  return scale;
}

/* The Taylor tail of exp on |r| <= ln2/2: sum_{j=2..13} r^(j-2) / j!, so that
   exp(r) = 1 + r + r^2 tail and expm1(r) = r + r^2 tail (truncation < 5e-18). */
static inline double nf_exp_tail(double r)
{
  double s = 1.0 / 6227020800.0; /* 1/13! */
  s = s * r + 1.0 / 479001600.0;
  s = s * r + 1.0 / 39916800.0;
  s = s * r + 1.0 / 3628800.0;
  s = s * r + 1.0 / 362880.0;
  s = s * r + 1.0 / 40320.0;
  s = s * r + 1.0 / 5040.0;
  s = s * r + 1.0 / 720.0;
  s = s * r + 1.0 / 120.0;
  s = s * r + 1.0 / 24.0;
  s = s * r + 1.0 / 6.0;
  return s * r + 0.5;
}

/* exp(y) for y in [-708, 0] to about 1 ulp: 2^k exp(r) (nf_exp_reduce), exp(r)
   by Horner's rule on its degree-13 Taylor polynomial (nf_exp_tail). */
static inline double nf_exp_nonpositive(double y)
{
  double r, scale = nf_exp_reduce(y < -708.0 ? -708.0 : y, &r);
  return ((nf_exp_tail(r) * r + 1.0) * r + 1.0) * scale;
}

/* tanh(x) to a few ulp, branch-free (vectorisable): for |x| < 1/4 the odd Taylor
   series x sum_k a_k x^2k to k = 11 (a_k from tanh' = 1 - tanh^2; truncation
   < 1e-18), else (1 - e) / (1 + e) with e = exp(-2|x|), |x| capped at 20 where
   tanh is 1 in double precision. NaN propagates: the final select takes the
   series unless |x| >= 1/4, a comparison NaN fails (tanh(+-Inf) = +-1). */
static inline double nf_tanh(double x)
{
  double ax = x < 0 ? -x : x, x2 = x * x;
  double e = nf_exp_nonpositive(-2.0 * (ax < 20.0 ? ax : 20.0));
  double big = (1.0 - e) / (1.0 + e);
  double p = -3.92783238833168327e-05;           /* a_11 = -113927491862/2900518163668125 */
  p = p * x2 + 9.69153795692945095e-05;
  p = p * x2 - 2.39129114243552478e-04;
  p = p * x2 + 5.90027440945585947e-04;
  p = p * x2 - 1.45583438705131833e-03;
  p = p * x2 + 3.59212803657248114e-03;
  p = p * x2 - 8.86323552990219733e-03;
  p = p * x2 + 2.18694885361552030e-02;
  p = p * x2 - 5.39682539682539708e-02;
  p = p * x2 + 1.33333333333333331e-01;         /* 2/15 */
  p = p * x2 - 3.33333333333333315e-01;         /* -1/3 */
  double small = ax + ax * x2 * p;
  double t = ax >= 0.25 ? big : small;
  return x < 0 ? -t : t;
}

/* *out = a * b; returns nonzero (and leaves *out) if the product overflows
   size_t. Every size product of the library goes through it. */
int nf_size_mul(size_t a, size_t b, size_t *out);

/* *out = a * b * c; nonzero (and *out left) on overflow of size_t. */
int nf_size_mul3(size_t a, size_t b, size_t c, size_t *out);

/* *out = a + b; nonzero (and *out left) on overflow of size_t. */
int nf_size_add(size_t a, size_t b, size_t *out);

/* NF_EINVAL with "fn: <what> (a x b) overflows" if a * b * sizeof(double)
   overflows size_t, else NF_OK with *out = a * b: the check of a count of
   doubles before it is allocated. */
nf_status nf_count_doubles(const char *fn, const char *what, size_t a, size_t b, size_t *out);

/* malloc of n objects of `size` bytes (at least one byte); NULL if n * size
   overflows size_t or on no memory. */
void *nf_alloc_n(size_t n, size_t size);

/* The readers' allocation cap (nf_set_alloc_limit), or SIZE_MAX if there is none. */
size_t nf_alloc_room(void);

/* NF_ENOMEM "path: needs bytes bytes, more than the allocation limit of L bytes"
   if bytes exceeds the cap set by nf_set_alloc_limit, else NF_OK (a reader calls
   it with the total it is about to hold for the file, before allocating). */
nf_status nf_check_alloc(const char *path, size_t bytes);

/* Largest |log-scale| whose exp stays a normal double both ways (exp(+-700)). */
#define NF_MAX_LOG_SCALE 700.0

/* NF_EDOMAIN naming family, what[j] and its index first + j if some |v_j| of
   v[0..n) exceeds NF_MAX_LOG_SCALE (exp(v_j) would over- or underflow and make
   the map singular), else NF_OK. */
nf_status nf_check_log_scales(const char *family, const char *what, size_t n, const double *v,
                              size_t first);

/* calloc of n doubles (at least one, so that n == 0 still gives a pointer); NULL on failure. */
double *nf_dalloc(size_t n);

/* First row of slice s when m rows are split into T contiguous slices (the
   remainder to the first slices); slice s is [lo(s), lo(s + 1)). */
size_t nf_slice_lo(size_t m, size_t T, size_t s);

/* Re-records the last detail as "prefix: detail" and returns status (an
   error of a part reported as the whole's). */
nf_status nf_fail_prefixed(nf_status status, const char *prefix);

/* A layer family's load marks a failure that is the caller's, not the file's
   (a user field without a resolver, or one the resolver does not know), so
   that nf_flow_load keeps its NF_EINVAL instead of reporting NF_EFORMAT.
   nf_take_caller_fault returns the mark (per thread) and clears it. */
void nf_mark_caller_fault(void);
int nf_take_caller_fault(void);

/* Doubles per coordinate a layer's parameters may take (planar: 2 dim + 1). */
#define NF_MAX_DOUBLES_PER_COORD 4

/* NF_EINVAL with "fn: dimension is 0" if dim is 0, or "fn: dimension D
   overflows the address space" if dim x NF_MAX_DOUBLES_PER_COORD doubles
   overflow size_t (checked before any caller's array of dim entries is
   read), else NF_OK. */
nf_status nf_check_dim(const char *fn, size_t dim);

/* NF_EINVAL with "fn: name must be finite and > 0, got value" unless it is, else NF_OK. */
nf_status nf_check_positive(const char *fn, const char *name, double value);

/* log(1 + v) where ratio = 1 + v is also known exactly: log1p(v), or
   log(ratio) for v < -0.5, where 1 + v would cancel. */
double nf_log1p_or_ratio(double v, double ratio);

/* +1 for NF_FORWARD, -1 for NF_INVERSE: the sign of a log-det or log-scale in
   the direction applied. */
double nf_dir_sign(nf_dir dir);

/* logdet[i] += value for the n rows (a log-det that does not depend on the
   row); logdet NULL: not wanted. */
void nf_logdet_add(size_t n, double *logdet, double value);

/* Sum of v[0..n), 0 for v == NULL (a g_logdet of NULL means zero). */
double nf_sum_or_zero(size_t n, const double *v);

/* A bijector's row pullbacks, for nf_vjp_rows; self holds the family's
   coefficients and parameter-cotangent accumulators. */
typedef struct nf_row_pullback {
  /* Adds the forward map's pullback at row z for cotangents (sg g_x, sg g_l):
     writes g_in = J^T (sg g_x) + sg g_l grad_z logdet_F (if g_in != NULL) and
     adds the parameter cotangents. */
  void (*pull)(void *self, const double *z, const double *g_x, double g_l, double sg,
               double *g_in);
  /* v = J^-T (g_z - g_l grad_z logdet_F) at row z. */
  void (*inverse_cotangent)(void *self, const double *z, const double *g_z, double g_l,
                            double *v);
  void *self;
} nf_row_pullback;

/* vjp of either direction row by row from the forward map's pullback: NF_FORWARD
   pulls (g_out, g_logdet) back at z = in; NF_INVERSE, with z = out = F^-1(in),
   writes g_in = v = J^-T (g_z - g_l grad_z logdet_F) and pulls (-v, -g_l) back
   at z for the parameters (implicit function theorem). v: d doubles of scratch. */
void nf_vjp_rows(const nf_row_pullback *pb, nf_dir dir, size_t n, size_t d, const double *in,
                 const double *out, const double *g_out, const double *g_logdet, double *g_in,
                 double *v);

/* The library's own layer families (one file each). */
extern const nf_layer_type nf_affine_type, nf_permute_type, nf_linear_lu_type, nf_planar_type,
    nf_radial_type, nf_coupling_type, nf_cnf_type, nf_standardize_type, nf_logit_type,
    nf_residual_type, nf_autoregressive_type, nf_inverse_type, nf_actnorm_type,
    nf_gaussianization_type;

/* Registers the library's own families for model files, once (thread-safe). */
void nf_register_builtin_families(void);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
