/* lib/transformers/affine.c — the affine transformer (RealNVP, Dinh et al. 2016):
   y = x exp(s) + t with raw parameters (s_raw, t) per coordinate, in that order,
   and the soft clamp s = B tanh(s_raw / B) that keeps |s| < B so training
   cannot blow the scale up (and no finite parameter makes the map singular).

   Record per coordinate: e = exp(+s) (forward) or exp(-s) (inverse), and s,
   so backward calls no transcendental function (ds/ds_raw = 1 - (s/B)^2).
   The maps use the library's branch-free tanh and exp, so that the loops over
   a block vectorise (NF_VECTOR_LOOP). */
#include <math.h>

#include "internal.h"
#include "nflow/config.h"
#include "transformer.h"

/* n_raw = 2: s_raw, t. */
static size_t affine_n_raw(const nf_transformer_opts *o)
{
  (void)o;
  return 2;
}

/* n_record = 2: e, s. */
static size_t affine_n_record(const nf_transformer_opts *o)
{
  (void)o;
  return 2;
}

/* B must be finite and > 0. */
static nf_status affine_check_opts(const nf_transformer_opts *o, const char *fn)
{
  return nf_check_positive(fn, "scale_bound", o->scale_bound);
}

/* The map of direction sigma (+1 forward, -1 inverse) with s = B tanh(s_raw / B):
   forward out = in exp(s) + t, inverse out = (in - t) exp(-s); logdet += sigma sum_j s_j.
   exp(sigma s) is exp(-|s|) or its reciprocal, the argument of nf_exp_nonpositive
   being <= 0. One elementwise pass over the block (vectorised), then the row sums
   of the recorded s in the order j = 0 .. db-1. */
NF_VECTOR_LOOP static void affine_map(const nf_transformer_opts *o, double sigma, size_t n,
                                      size_t db, const double *h, const double *in,
                                      double *out, double *logdet, double *rec)
{
  const double B = o->scale_bound, inv_b = 1.0 / B;
  const size_t nd = n * db;
  for (size_t k = 0; k < nd; k++) {
    double s = B * nf_tanh(h[2 * k] * inv_b), t = h[2 * k + 1];
    double em = nf_exp_nonpositive(-(s < 0 ? -s : s)), e = sigma * s > 0 ? 1.0 / em : em;
    out[k] = sigma > 0 ? in[k] * e + t : (in[k] - t) * e;
    rec[2 * k] = e;
    rec[2 * k + 1] = s;
  }
  for (size_t i = 0; logdet && i < n; i++) {
    double sum_s = 0;
    for (size_t j = 0; j < db; j++) sum_s += rec[2 * (i * db + j) + 1];
    logdet[i] += sigma * sum_s;
  }
}

/* y = x exp(s) + t; logdet += sum_j s_j. */
static nf_status affine_forward(const nf_transformer_opts *o, size_t n, size_t db,
                                const double *h, const double *x, double *y, double *logdet,
                                double *rec)
{
  affine_map(o, 1.0, n, db, h, x, y, logdet, rec);
  return NF_OK;
}

/* x = (y - t) exp(-s); logdet -= sum_j s_j. */
static nf_status affine_inverse(const nf_transformer_opts *o, size_t n, size_t db,
                                const double *h, const double *y, double *x, double *logdet,
                                double *rec)
{
  affine_map(o, -1.0, n, db, h, y, x, logdet, rec);
  return NF_OK;
}

/* With e = exp(+-s) and w = d out / d s (forward x e, inverse -out):
   g_in = g_out e; g_t = g_out (forward) or -g_out e (inverse);
   g_s_raw = (g_out w +- g_logdet) (1 - (s/B)^2). */
NF_VECTOR_LOOP static void affine_backward(const nf_transformer_opts *o, nf_dir dir, size_t n, size_t db,
                            const double *h, const double *in, const double *out,
                            const double *rec, const double *g_out, const double *g_logdet,
                            double *g_in, double *g_h)
{
  (void)h;
  const int fwd = dir == NF_FORWARD;
  const double inv_b = 1.0 / o->scale_bound;
  const double sign = nf_dir_sign(dir);
  for (size_t i = 0; i < n; i++) {
    double gl = g_logdet ? g_logdet[i] : 0.0;
    for (size_t j = 0; j < db; j++) {
      size_t k = i * db + j;
      double e = rec[2 * k], go = g_out[k], g_z = go * e;
      double w = fwd ? in[k] * e : -out[k];
      double q = rec[2 * k + 1] * inv_b;
      g_h[2 * k] = (go * w + sign * gl) * (1.0 - q * q);
      g_h[2 * k + 1] = fwd ? go : -g_z;
      if (g_in) g_in[k] = g_z;
    }
  }
}

/* s_raw = 0, t = 0 is the identity (s = 0). */
static void affine_identity_init(const nf_transformer_opts *o, double *h0)
{
  (void)o;
  h0[0] = h0[1] = 0.0;
}

/* Saves B as "scale_bound". */
static nf_status affine_save_opts(const nf_transformer_opts *o, nf_config *cfg)
{
  return nf_config_set_real(cfg, "scale_bound", o->scale_bound);
}

/* Reads B from "scale_bound" (checked by the constructor that uses it). */
static nf_status affine_load_opts(const nf_config *cfg, nf_transformer_opts *o)
{
  return nf_config_get_real(cfg, "scale_bound", &o->scale_bound);
}

const nf_transformer nf_transformer_affine = {
  .name = "affine",
  .n_raw = affine_n_raw,
  .n_record = affine_n_record,
  .check_opts = affine_check_opts,
  .forward = affine_forward,
  .inverse = affine_inverse,
  .backward = affine_backward,
  .identity_init = affine_identity_init,
  .save_opts = affine_save_opts,
  .load_opts = affine_load_opts,
};
