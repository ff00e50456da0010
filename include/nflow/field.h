/* nflow/field.h — a user-supplied vector field f(t, z; theta) for a continuous
   flow: C callbacks instead of a network, so a flow can follow the user's own
   dynamics (say the Hamiltonian field of a physical system). All callbacks work
   on a batch of n rows (z: n x dim, ctx: n x ctx_dim or NULL, theta: the field's
   n_params parameters, a view into the flow's flat vector) and return 0 on
   success, nonzero to stop the solve (reported as NF_ESOLVER). */
#ifndef NFLOW_FIELD_H
#define NFLOW_FIELD_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_field {
  const char *name;    /* how model files refer to the field: a loader asks its
                          nf_resolver for the callbacks of this name (may be NULL:
                          such a flow cannot be saved); copied by nf_cnf_field_new */
  size_t n_params;     /* learnable parameters theta (0: none) */
  int divergence_free; /* nonzero: tr(df/dz) = 0 everywhere (e.g. Hamiltonian flow), no
                          divergence is computed and the log-det is 0 */
  /* Required: f_i = f(t, z_i; theta, ctx_i), written to f (n x dim). */
  int (*f)(double t, size_t n, const double *z, const double *ctx, const double *theta,
           double *f, void *user);
  /* Optional: the divergence div_i = tr(df/dz)(t, z_i), written to div (n).
     NULL: central differences of f along each axis (2 dim extra calls of f, step
     h = 6e-6 max(1, |z_ik|); error about 1e-10 times the scale of f's third
     derivative and of f for smooth fields). */
  int (*div)(double t, size_t n, const double *z, const double *ctx, const double *theta,
             double *div, void *user);
  /* Optional, needed for gradients (the layer's vjp, training): with per-row
     weights a (n x dim) and w (n; NULL if divergence_free), the gradient of
       S = sum_i a_i . f_i + w_i div_i
     with respect to z (WRITTEN to g_z, n x dim), t (WRITTEN to *g_t if non-NULL),
     theta (ADDED to g_theta if non-NULL) and ctx (ADDED to g_ctx if non-NULL).
     NULL: the layer's vjp refuses with NF_EINVAL (density evaluation and
     sampling still work); no finite-difference fallback, since the adjoint needs
     second derivatives of f that differences of differences give too poorly. */
  int (*adjoint)(double t, size_t n, const double *z, const double *ctx, const double *theta,
                 const double *a, const double *w, double *g_z, double *g_theta,
                 double *g_t, double *g_ctx, void *user);
  void *user;
} nf_field;

#ifdef __cplusplus
}
#endif
#endif
