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

/* Asserts the checked entry points' documented answers to bad calls, in both
   directions, on a layer that is not in a flow: NF_EINVAL for a NULL layer,
   an unknown direction, n = 0, NULL input, output, g_out, context (when the
   layer takes one) or workspace (when it needs one), and an output aliasing
   the input; NF_ENONFINITE naming the row and column of a NaN or Inf in the
   input or context; NF_EDIM when pushed onto a flow of another dimension or
   context width. Outputs, cotangents and the parameter gradient are left
   untouched by all of these, and the same calls with good arguments succeed. */
void th_check_bad_calls(nf_layer *layer);

/* Integral of exp(log p) of a 2-D flow over [-a, a]^2 by the midpoint rule on
   an m x m grid. */
double th_grid_mass(nf_flow *flow, double a, size_t m);

/* Runs a suite in the normal fork mode; returns EXIT_SUCCESS or EXIT_FAILURE. */
int th_run_suite(Suite *suite);

/* Runs the NULL-terminated tests (START_TEST names) as the suite `name` of one
   test case, with a per-test timeout in seconds (0: Check's default). */
int th_run_tests(const char *name, double timeout, const TTest *const *tests);

#endif
