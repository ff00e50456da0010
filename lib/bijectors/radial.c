/* lib/radial.c — radial flow x = z + beta/(alpha + r) (z - z0), r = |z - z0|
   (Rezende & Mohamed 2015).

   With A = alpha + r and s_b = softplus(b) = alpha + beta, the radius scales by
   rho = (s_b + r)/A and the Jacobian rho I + (kappa - rho) e e^T (e = (z - z0)/r)
   has eigenvalues rho (dim - 1 times) and kappa = (alpha (s_b + 2r) + r^2)/A^2.
   vjp in the inverse direction reuses the forward pullback: for z = F^-1(x; theta),
   g_x = J^-T (g_z - g_logdet grad_z logdet_F) and the parameter gradient is the
   forward one with cotangents (-g_x, -g_logdet) (implicit function theorem;
   nf_vjp_rows).

   Parameters: z0 = params[0..d), a = params[d], b = params[d + 1].
   Workspace: one row's cotangent[d]. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "nflow/config.h"
#include "nflow/radial.h"

/* Scalars of the parameters shared by every row. */
typedef struct radial_coef {
  const double *z0;
  double alpha;  /* softplus(a) > 0 */
  double s_b;    /* softplus(b) = alpha + beta > 0 */
  double beta;   /* s_b - alpha > -alpha */
  double sig_a;  /* dalpha/da = sigmoid(a) */
  double sig_b;  /* ds_b/db = sigmoid(b) */
} radial_coef;

/* One row's geometry at radius r = |z - z0|. */
typedef struct radial_row {
  double r, A;     /* r, alpha + r */
  double n_rho;    /* s_b + r = A rho */
  double n_kappa;  /* alpha (s_b + 2r) + r^2 = A^2 kappa */
  double rho, kappa;
  double logdet;   /* (d - 1) log rho + log kappa */
  double dl_dr;    /* d logdet / dr at fixed alpha, beta */
  double dl_dalpha, dl_dbeta; /* d logdet / d alpha, d beta at fixed r */
} radial_row;

/* Euclidean distance |z - z0| = m sqrt(sum ((z_j - z0_j)/m)^2), scaled as
   LAPACK's dnrm2 does so that the squares neither overflow (|z| up to
   DBL_MAX) nor underflow: m = 2^-600 or 2^600 (exact) when max |z_j - z0_j|
   is above 2^500 or below 2^-500, else 1 (bit for bit the unscaled sum). */
static double radius(size_t d, const double *z, const double *z0)
{
  double big = 0, s = 0;
  for (size_t j = 0; j < d; j++) big = fmax(big, fabs(z[j] - z0[j]));
  double scale = big > 0x1p500 ? 0x1p-600 : big < 0x1p-500 ? 0x1p600 : 1.0;
  for (size_t j = 0; j < d; j++) {
    double u = (z[j] - z0[j]) * scale;
    s += u * u;
  }
  return sqrt(s) / scale;
}

/* alpha, beta and their derivatives from the (checked, finite) parameters. */
static void radial_setup(const nf_layer *layer, const double *theta, radial_coef *rc)
{
  size_t d = layer->dim;
  double a = theta[d], b = theta[d + 1];
  rc->z0 = theta;
  rc->alpha = nf_softplus(a);
  rc->s_b = nf_softplus(b);
  rc->beta = rc->s_b - rc->alpha;
  rc->sig_a = nf_sigmoid(a);
  rc->sig_b = nf_sigmoid(b);
}

/* rho, kappa, logdet and its partial derivatives at radius r (Rezende & Mohamed 2015). */
static radial_row radial_at(const radial_coef *rc, size_t d, double r)
{
  radial_row w;
  double al = rc->alpha, be = rc->beta, dm1 = (double)(d - 1);
  w.r = r;
  w.A = al + r;
  w.n_rho = rc->s_b + r;
  w.n_kappa = al * (rc->s_b + 2.0 * r) + r * r;
  w.rho = w.n_rho / w.A;
  /* (alpha (s_b + 2r)/A + r (r/A))/A: n_kappa and A^2 overflow for r > 1e154 */
  w.kappa = (al * (rc->s_b + 2.0 * r) / w.A + r * (r / w.A)) / w.A;
  w.logdet = dm1 * nf_log1p_or_ratio(be / w.A, w.rho)
             + nf_log1p_or_ratio(al * be / (w.A * w.A), w.kappa);
  w.dl_dr = -dm1 * be / (w.A * w.n_rho) - 2.0 * al * be / (w.A * w.n_kappa);
  w.dl_dalpha = -dm1 * be / (w.A * w.n_rho) + be * (r - al) / (w.A * w.n_kappa);
  w.dl_dbeta = dm1 / w.n_rho + al / w.n_kappa;
  return w;
}

/* Positive root r of r^2 + (s_b - r_x) r - alpha r_x = 0, without cancellation. */
static double radial_inverse_radius(const radial_coef *rc, double r_x)
{
  double B = rc->s_b - r_x, disc = hypot(B, 2.0 * sqrt(rc->alpha * r_x));
  return B <= 0 ? 0.5 * (disc - B) : 2.0 * rc->alpha * r_x / (B + disc);
}

/* radial's row pullbacks (nf_row_pullback.self): the coefficients and the
   accumulated dL/dalpha and dL/dbeta. */
typedef struct radial_pull {
  const nf_layer *layer;
  double *g_theta;
  const radial_coef *rc;
  double g_alpha, g_beta;
} radial_pull;

/* nf_row_pullback.pull: g_in = J^T (sg g_x) + sg g_l grad_z logdet at row z;
   dL/dz0 into g_theta, dL/dalpha and dL/dbeta into self. */
static void radial_pull_row(void *self, const double *z, const double *g_x, double g_l,
                            double sg, double *g_in)
{
  radial_pull *rp = self;
  const radial_coef *rc = rp->rc;
  size_t d = rp->layer->dim;
  radial_row w = radial_at(rc, d, radius(d, z, rc->z0));
  double gx_dz = 0;
  for (size_t j = 0; j < d; j++) gx_dz += g_x[j] * (z[j] - rc->z0[j]);
  gx_dz *= sg;
  double dh = -rc->beta / (w.A * w.A); /* d(beta/A)/dr = d(beta/A)/dalpha */
  double g_r = dh * gx_dz + sg * g_l * w.dl_dr;
  double radial = w.r > 0 ? g_r / w.r : 0.0;
  for (size_t j = 0; j < d; j++) {
    double g_dz = sg * (rc->beta / w.A) * g_x[j] + radial * (z[j] - rc->z0[j]);
    if (g_in) g_in[j] = sg * g_x[j] + g_dz;
    rp->g_theta[j] -= g_dz;
  }
  rp->g_alpha += dh * gx_dz + sg * g_l * w.dl_dalpha;
  rp->g_beta += gx_dz / w.A + sg * g_l * w.dl_dbeta;
}

/* nf_row_pullback.inverse_cotangent: v = J^-T (g_z - g_l grad_z logdet_F) at row z,
   J^-1 = I/rho + (1/kappa - 1/rho) e e^T. */
static void radial_inverse_cotangent(void *self, const double *z, const double *g_z, double g_l,
                                     double *v)
{
  const radial_pull *rp = self;
  const radial_coef *rc = rp->rc;
  size_t d = rp->layer->dim;
  radial_row w = radial_at(rc, d, radius(d, z, rc->z0));
  double inv_r = w.r > 0 ? 1.0 / w.r : 0.0, e_g = 0;
  for (size_t j = 0; j < d; j++) e_g += (z[j] - rc->z0[j]) * inv_r * g_z[j];
  e_g -= g_l * (w.r > 0 ? w.dl_dr : 0.0); /* e.(g_z - g_l dl_dr e) */
  double coef = e_g / w.kappa - (e_g + g_l * (w.r > 0 ? w.dl_dr : 0.0)) / w.rho;
  for (size_t j = 0; j < d; j++) v[j] = g_z[j] / w.rho + coef * (z[j] - rc->z0[j]) * inv_r;
}

/* Workspace: one row's cotangent[d], a parameter cotangent [d + 2] for when
   the caller wants none. */
static size_t radial_work_size(const nf_layer *layer, size_t n)
{
  (void)n;
  return 2 * layer->dim + 2;
}

/* nf_layer_type.apply: x = z + beta/(alpha + r) (z - z0) or its closed-form inverse, with log-det. */
static nf_status radial_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                              const double *ctx, double *out, double *logdet, const nf_apply_opts *opts, double *work)
{
  (void)ctx;
  (void)opts;
  (void)work;
  size_t d = layer->dim;
  radial_coef rc;
  radial_setup(layer, theta, &rc);
  for (size_t i = 0; i < n; i++) {
    const double *p = in + i * d;
    double *q = out + i * d, r_in = radius(d, p, rc.z0);
    if (dir == NF_FORWARD) {
      radial_row w = radial_at(&rc, d, r_in);
      for (size_t j = 0; j < d; j++) q[j] = p[j] + rc.beta / w.A * (p[j] - rc.z0[j]);
      if (logdet) logdet[i] += w.logdet;
    } else {
      radial_row w = radial_at(&rc, d, radial_inverse_radius(&rc, r_in));
      for (size_t j = 0; j < d; j++) q[j] = rc.z0[j] + (p[j] - rc.z0[j]) / w.rho;
      if (logdet) logdet[i] -= w.logdet;
    }
  }
  return NF_OK;
}

/* nf_layer_type.vjp: input and parameter cotangents of either direction (nf_vjp_rows). */
static nf_status radial_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                            const double *ctx, const double *out, const double *g_out,
                            const double *g_logdet, double *g_in, double *g_ctx, double *g_theta, double *work)
{
  (void)ctx;
  (void)g_ctx;
  size_t d = layer->dim;
  radial_coef rc;
  double *g_params = g_theta ? g_theta : work + d;
  radial_pull rp = {layer, g_params, &rc, 0.0, 0.0};
  radial_setup(layer, theta, &rc);
  nf_row_pullback pb = {radial_pull_row, radial_inverse_cotangent, &rp};
  nf_vjp_rows(&pb, dir, n, d, in, out, g_out, g_logdet, g_in, work);
  /* alpha = softplus(a), beta = softplus(b) - alpha */
  g_params[d] += rc.sig_a * (rp.g_alpha - rp.g_beta);
  g_params[d + 1] += rc.sig_b * rp.g_beta;
  return NF_OK;
}

/* save: nothing (inv_tol is unused by the closed-form inverse and not kept). */
static nf_status radial_save(const nf_layer *layer, nf_config *cfg)
{
  (void)layer;
  (void)cfg;
  return NF_OK;
}

/* Any valid inv_tol for the loader: radial layers do not use it. */
#define RADIAL_LOAD_TOL 1e-12

/* load: nf_radial_new(dim, any tolerance, NULL). */
static nf_layer *radial_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                             const nf_resolver *res)
{
  (void)ctx_dim;
  (void)cfg;
  (void)res;
  return nf_radial_new(dim, RADIAL_LOAD_TOL, NULL);
}

const nf_layer_type nf_radial_type = {
  .name = "radial",
  .save = radial_save,
  .load = radial_load,
  .work_size = radial_work_size,
  .apply = radial_apply,
  .vjp = radial_vjp,
};

/* Validates the arguments, then a layer initialised as radial.h says. */
nf_layer *nf_radial_new(size_t dim, double inv_tol, nf_rng *rng)
{
  if (nf_check_dim("nf_radial_new", dim) || nf_check_positive("nf_radial_new", "inv_tol", inv_tol))
    return NULL;
  nf_layer *layer = nf_layer_create(&nf_radial_type, dim, 0, dim + 2, NULL); /* nf_check_dim */
  if (layer && rng) { /* NULL rng: zeroed parameters, the identity */
    for (size_t j = 0; j < dim; j++) layer->init[j] = nf_rng_normal(rng);
    layer->init[dim + 1] = 0.1 * nf_rng_normal(rng);
  }
  return layer;
}
