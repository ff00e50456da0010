/* lib/bijectors/residual_internal.h — the residual layer's net g (spectrally
   normalised tanh MLP with forward, tangent, first- and second-order reverse
   passes) and its log-det estimators, shared by residual*.c (not installed). */
#ifndef NFLOW_RESIDUAL_INTERNAL_H
#define NFLOW_RESIDUAL_INTERNAL_H

#include <stddef.h>
#include "nflow/residual.h"
#include "nflow/status.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* Shape of g: width[0] = d + c -> width[1..L-1] (tanh) -> width[L] = d. */
typedef struct rn_net {
  size_t d, c, n_layers; /* L affine layers */
  size_t *width;         /* L + 1 widths */
  size_t n_params, sum_hidden, max_width, sum_out, sum_norm;
  nf_residual_opts o;    /* o.hidden points into width + 1 */
} rn_net;

/* Pointers into a workspace of rn_work_size(net, n) doubles for n rows. */
typedef struct rn_work {
  double *pt;      /* P: normalised parameters (record) */
  double *sigma;   /* L: spectral norms (record) */
  double *scale;   /* L: min(1, c / sigma) (record) */
  double *u, *v;   /* singular vectors: sum of out widths, sum of normalised in widths (record) */
  double *ld;      /* exact: n d d rows of (I + J)^-1; estimate: probes v (n d) then y (n d) (record) */
  double *h;       /* n x sum_hidden: hidden outputs at the current point */
  double *hd;      /* n m x sum_hidden: tangent hidden outputs */
  double *tin, *tout, *tw; /* n m x d: tangents in, J tangents, weights */
  double *b[4];    /* n m x max_width: reverse-pass buffers */
  double *gpt;     /* P: gradient with respect to pt */
  double *s[4];    /* n x d: fixed-point and result scratch */
  double *gc;      /* n x c: context cotangent until the vjp succeeds */
  double *lu;      /* d x d + d: one row's LU and pivots */
} rn_work;

/* Tangent directions per row: d for the exact log-det, 1 for the estimate. */
size_t rn_tangents(const rn_net *net);

/* Doubles of workspace for n rows, 0 on overflow or n m rows beyond a BLAS int. */
size_t rn_work_size(const rn_net *net, size_t n);

/* Carves work into the buffers of rn_work for n rows. */
rn_work rn_layout(const rn_net *net, size_t n, double *work);

/* W~ = W min(1, c / sigma(W)) for every layer (power iteration, see residual.h):
   writes w->pt, sigma, scale, u, v from theta. */
void rn_normalize(const rn_net *net, const double *theta, rn_work *w);

/* g_theta += (dW~/dW)^T w->gpt: d(s W) = s dW - (c / sigma^2) (u^T dW v) W where s < 1. */
void rn_normalize_backward(const rn_net *net, const double *theta, const rn_work *w,
                           double *g_theta);

/* y = g(x, ctx) for n rows with parameters w->pt; records the hidden outputs in w->h. */
void rn_forward(const rn_net *net, const rn_work *w, size_t n, const double *x,
                const double *ctx, double *y);

/* Reverse pass after rn_forward at x: with gy (n x d), WRITES gx = J^T gy (if
   non-NULL), ADDS dg/dctx^T gy into gctx and dg/dpt^T gy into gpt (if non-NULL).
   Uses w->b[0..1]. */
void rn_backward(const rn_net *net, const rn_work *w, size_t n, const double *x,
                 const double *ctx, const double *gy, double *gx, double *gctx, double *gpt);

/* Tangents after rn_forward: jv_r = J(x_i) v_r for the n m rows r of v (row r
   belongs to point i = r / m); records the tangent hidden outputs in w->hd. */
void rn_tangent(const rn_net *net, const rn_work *w, size_t n, size_t m, const double *v,
                double *jv);

/* The second-order primitive, after rn_forward and rn_tangent with the same v:
   the gradient of S = sum_r wt_r^T J(x_{r/m}) v_r with respect to x (WRITTEN to
   gx, n x d), ctx (ADDED to gctx if non-NULL) and pt (ADDED to w->gpt):
   forward-mode tangent, then reverse mode over forward and tangent passes. */
void rn_wjv_grad(const rn_net *net, const rn_work *w, size_t n, size_t m, const double *x,
                 const double *ctx, const double *v, const double *wt, double *gx,
                 double *gctx);

/* Log-det log|det(I + J(x_i))| of the n rows after rn_forward at x_i, into ld
   (WRITTEN), leaving in w->ld the record rn_logdet_grad reads. Exact: LU of
   I + J; estimate: the Russian-roulette series with the noise of (seed, row0).
   NF_EDOMAIN if I + J is singular (cannot happen when Lip(g) < 1). */
nf_status rn_logdet(const rn_net *net, rn_work *w, size_t n, uint64_t seed, size_t row0,
                    double *ld);

/* After rn_forward at x and rn_logdet: the gradient (exact, or the Neumann
   estimator) of sum_i gl_i logdet_i with respect to x (WRITTEN to gx), ctx
   (ADDED to gctx if non-NULL) and pt (ADDED to w->gpt). */
void rn_logdet_grad(const rn_net *net, rn_work *w, size_t n, const double *x,
                    const double *ctx, const double *gl, double *gx, double *gctx);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif
