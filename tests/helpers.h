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

/* Integral of exp(log p) of a 2-D flow over [-a, a]^2 by the midpoint rule on
   an m x m grid. */
double th_grid_mass(nf_flow *flow, double a, size_t m);

/* Runs a suite in the normal fork mode; returns EXIT_SUCCESS or EXIT_FAILURE. */
int th_run_suite(Suite *suite);

#endif
