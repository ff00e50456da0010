/* lib/transformers/additive.c — the additive transformer (NICE, Dinh et al. 2014):
   y = x + t with one raw parameter t per coordinate and log|dτ/dx| = 0. */
#include "internal.h"
#include "transformer.h"

/* n_raw = 1: t. */
static size_t additive_n_raw(const nf_transformer_opts *o)
{
  (void)o;
  return 1;
}

/* Nothing to record: dτ/dx = 1. */
static size_t additive_n_record(const nf_transformer_opts *o)
{
  (void)o;
  return 0;
}

/* Every option is acceptable (additive reads none). */
static nf_status additive_check_opts(const nf_transformer_opts *o, const char *fn)
{
  (void)o;
  (void)fn;
  return NF_OK;
}

/* out = in + sigma t (sigma +1 forward, -1 inverse); log|dτ/dx| = 0, so logdet is left as it is. */
static nf_status additive_map(double sigma, size_t n, size_t db, const double *h,
                              const double *in, double *out)
{
  for (size_t k = 0; k < n * db; k++) out[k] = in[k] + sigma * h[k];
  return NF_OK;
}

/* y = x + t. */
static nf_status additive_forward(const nf_transformer_opts *o, size_t n, size_t db,
                                  const double *h, const double *x, double *y, double *logdet,
                                  double *rec)
{
  (void)o, (void)logdet, (void)rec;
  return additive_map(1.0, n, db, h, x, y);
}

/* x = y - t. */
static nf_status additive_inverse(const nf_transformer_opts *o, size_t n, size_t db,
                                  const double *h, const double *y, double *x, double *logdet,
                                  double *rec)
{
  (void)o, (void)logdet, (void)rec;
  return additive_map(-1.0, n, db, h, y, x);
}

/* g_in = g_out; g_t = g_out (forward) or -g_out (inverse); g_logdet does not enter. */
static void additive_backward(const nf_transformer_opts *o, nf_dir dir, size_t n, size_t db,
                              const double *h, const double *in, const double *out,
                              const double *rec, const double *g_out, const double *g_logdet,
                              double *g_in, double *g_h)
{
  (void)o;
  (void)h;
  (void)in;
  (void)out;
  (void)rec;
  (void)g_logdet;
  const int fwd = dir == NF_FORWARD;
  for (size_t k = 0; k < n * db; k++) g_h[k] = fwd ? g_out[k] : -g_out[k];
  if (g_in) memcpy(g_in, g_out, n * db * sizeof *g_in);
}

/* t = 0 is the identity. */
static void additive_identity_init(const nf_transformer_opts *o, double *h0)
{
  (void)o;
  h0[0] = 0.0;
}

const nf_transformer nf_transformer_additive = {
  .name = "additive",
  .n_raw = additive_n_raw,
  .n_record = additive_n_record,
  .check_opts = additive_check_opts,
  .forward = additive_forward,
  .inverse = additive_inverse,
  .backward = additive_backward,
  .identity_init = additive_identity_init,
};
