/* tests/helpers.h — numerical checks every bijector's test uses. */
#ifndef NFLOW_TEST_HELPERS_H
#define NFLOW_TEST_HELPERS_H

#include <check.h>
#include <stdint.h>
#include "nflow.h"

/* out[0..n) ~ N(0, scale^2). */
void th_randn(nf_rng *rng, size_t n, double scale, double *out);

/* max_i |a_i - b_i|. */
double th_max_abs_diff(size_t n, const double *a, const double *b);

/* Norm-wise relative error ||a - b||_inf / max(||b||_inf, floor). */
double th_rel_err(size_t n, const double *a, const double *b, double floor);

/* Sets every parameter of the layer to N(0, scale^2) draws. */
void th_randomize_params(nf_layer *layer, nf_rng *rng, double scale);

/* Asserts layer != NULL (reporting nf_errmsg()), sets its parameters to
   N(0, scale^2) draws from seed and returns it. */
nf_layer *th_random_layer(nf_layer *layer, uint64_t seed, double scale);

/* n x d points ~ N(0, scale^2) drawn from `seed` (caller frees). */
double *th_random_points(size_t n, size_t d, uint64_t seed, double scale);

/* Asserts that the layer is the identity in both directions on n rows (and
   contexts) ~ N(0, 2^2) from seed: |out - in| <= rel_tol |in| entrywise and
   each logdet[i] keeps its value to within rel_tol (rel_tol 0: exactly). */
void th_check_identity(const nf_layer *layer, size_t n, uint64_t seed, double rel_tol);

/* Asserts that make(v) gives NULL with a message naming fn and name for
   v = 0, -1, NaN and +Inf (a parameter that must be finite and > 0). */
void th_check_rejects_nonpositive(nf_layer *(*make)(double v), const char *fn, const char *name);

/* max |inverse(forward(z)) - z| over the batch; if logdet_cancel != NULL it
   receives max_i |logdet_forward_i + logdet_inverse_i|. */
double th_roundtrip_error(const nf_layer *layer, size_t n, const double *z,
                          const double *ctx, double *logdet_cancel);

/* max_i |logdet_i - log|det J_i||, J_i the central-difference Jacobian (step h)
   of row i's map, its determinant by LU with partial pivoting. */
double th_logdet_error(const nf_layer *layer, nf_dir dir, size_t n, const double *in,
                       const double *ctx, double h);

/* Norm-wise relative errors of vjp's gradients against central differences
   (step h) of L = sum(g_out * out) + sum(g_logdet * logdet) + the layer's
   penalty (if it has one), with g_out and
   g_logdet ~ N(0, 1) drawn from `seed`. A field is 0 where there is nothing to
   check (no context, no parameters). */
typedef struct th_vjp_errors {
  double in, ctx, params;
} th_vjp_errors;
th_vjp_errors th_vjp_check(nf_layer *layer, nf_dir dir, size_t n, const double *in,
                           const double *ctx, uint64_t seed, double h);

/* Bounds and finite-difference steps of th_check_bijector. */
typedef struct th_tolerances {
  double roundtrip; /* max |inverse(forward(z)) - z| */
  double cancel;    /* max_i |logdet_forward_i + logdet_inverse_i| */
  double logdet;    /* max_i |logdet_i - log|det J_i|| (th_logdet_error) */
  double vjp;       /* norm-wise relative error of each vjp gradient (th_vjp_check) */
  double h_logdet;  /* step of the finite-difference Jacobian */
  double h_vjp;     /* step of the finite-difference gradients */
} th_tolerances;

/* 1e-10, 1e-10, 1e-6, 1e-6 with steps h_logdet = 1e-5 and h_vjp = 1e-6. */
th_tolerances th_default_tolerances(void);

/* Asserts that a bijector is consistent on the n rows z (context ctx, NULL
   iff layer->ctx_dim == 0): inverse(forward(z)) = z, the two log-dets cancel,
   and in BOTH directions (at z) the log-det matches the finite-difference
   Jacobian and vjp matches central differences for the input, context and
   parameter gradients; tol NULL means th_default_tolerances(). Prints one line
   per check with the measured maximum, headed by label (NULL: the type name). */
void th_check_bijector(const char *label, nf_layer *layer, size_t n, const double *z,
                       const double *ctx, const th_tolerances *tol);

/* One case of a family's bijector checks: returns a layer of dimension d with
   parameters drawn from seed in the family's regime `variant`, and may move
   the n test rows z (n x d, drawn by the caller) into the region the regime
   is checked on. */
typedef nf_layer *(*th_case_fn)(size_t d, uint64_t seed, int variant, size_t n, double *z);

/* The common battery of a context-free bijector family in one regime:
   th_check_bijector on the cases d = 1, 2, 5 with three seeds each, 20 rows
   ~ N(0, row_scale^2) per case, and th_check_vjp_accumulates on a case with
   d = 3 and 4 rows; label names the family and regime in the log. */
void th_check_bijector_family(const char *label, th_case_fn make, int variant, double row_scale);

/* Asserts vjp's accumulation contract in both directions on the n rows z:
   it WRITES g_in (exactly the same values on every call), ADDS into g_ctx
   (to 1e-14) and layer->grad (a second call doubles the parameter gradient,
   to a norm-wise relative 1e-14), treats g_logdet == NULL as zero and gives
   the same parameter gradient, exactly, whichever of g_in and g_ctx are wanted. */
void th_check_vjp_accumulates(nf_layer *layer, size_t n, const double *z, const double *ctx);

/* Asserts the checked entry points' documented answers to bad calls, in both
   directions, on a layer that is not in a flow: NF_EINVAL for a NULL layer,
   an unknown direction, n = 0, NULL input, output, g_out, context (when the
   layer takes one) or workspace (when it needs one), and an output aliasing
   the input; NF_ENONFINITE naming the row and column of a NaN or Inf in the
   input or context; NF_EDIM when pushed onto a flow of another dimension or
   context width. Outputs, cotangents and the parameter gradient are left
   untouched by all of these, and the same calls with good arguments succeed. */
void th_check_bad_calls(nf_layer *layer);

/* Asserts that with params[k] = bad (restored after) apply and vjp return
   NF_ENONFINITE in both directions with a message naming "parameter k", and
   leave outputs, cotangents and the parameter gradient untouched. */
void th_check_nonfinite_param(nf_layer *layer, size_t k, double bad);

/* Integral of exp(log p) of a 2-D flow over [-a, a]^2 by the midpoint rule on
   an m x m grid. */
double th_grid_mass(nf_flow *flow, double a, size_t m);

/* Asserts |th_grid_mass(flow, a, m) - 1| <= tol, printing the mass after label. */
void th_check_grid_mass(const char *label, nf_flow *flow, double a, size_t m, double tol);

/* Path of the fixture tests/data/name under $top_srcdir (or "."); valid until the next call. */
const char *th_data_path(const char *name);

/* Asserts that reader (nf_dataset_read_csv, nf_dataset_read_npy) fails on fixture
   name with status, leaves its output untouched and sets nf_errmsg() to the
   fixture's path followed by suffix. */
void th_assert_read_error(nf_status (*reader)(const char *, nf_dataset **), const char *name,
                          nf_status status, const char *suffix);

/* Runs a suite in the normal fork mode; returns EXIT_SUCCESS or EXIT_FAILURE. */
int th_run_suite(Suite *suite);

/* Runs the NULL-terminated tests (START_TEST names) as the suite `name` of one
   test case, with a per-test timeout in seconds (0: 60 s; it guards against
   hangs only — CK_TIMEOUT_MULTIPLIER stretches it for slow builds). */
int th_run_tests(const char *name, double timeout, const TTest *const *tests);

#endif
