/* lib/bijectors/residual_net.c — the residual layer's net g(x, ctx): a tanh
   MLP with spectrally normalised weights (Miyato et al. 2018; Behrmann et al.
   2019), batched through cblas_dgemm, with the passes the layer needs: forward,
   reverse (J^T u and parameter gradients), forward-mode tangents (J v), and
   the second-order primitive grad_{x, ctx, theta} of w^T J v.

   Layer l (p = width[l] inputs, q = width[l+1] outputs): a_l = W_l h_{l-1} + b_l,
   h_l = tanh(a_l) except after the last layer; h_{-1} = [x, ctx]. Tangents:
   da_l = W_l dh_{l-1}, dh_l = (1 - h_l^2) da_l, dh_{-1} = [v, 0]. tanh' and
   tanh'' = -2 h (1 - h^2) are functions of the output h, so the record is the
   hidden outputs h (n rows) and tangent outputs dh (n m rows). */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "internal.h"
#include "residual_internal.h"

size_t rn_tangents(const rn_net *net)
{
  return net->o.logdet == NF_RESIDUAL_EXACT ? net->d : 1;
}

/* *tot += a * b; nonzero on overflow. */
static int add_prod(size_t *tot, size_t a, size_t b)
{
  size_t p;
  return nf_size_mul(a, b, &p) || nf_size_add(*tot, p, tot);
}

size_t rn_work_size(const rn_net *net, size_t n)
{
  size_t d = net->d, m = rn_tangents(net), R, tot = 0;
  if (nf_size_mul(n, m, &R) || R > INT_MAX) return 0; /* rows of a BLAS call */
  int bad = add_prod(&tot, 2, net->n_params) || add_prod(&tot, 2, net->n_layers) ||
            add_prod(&tot, 1, net->sum_out) || add_prod(&tot, 1, net->sum_norm) ||
            add_prod(&tot, n, net->sum_hidden) || add_prod(&tot, R, net->sum_hidden) ||
            add_prod(&tot, R, 3 * d + 4 * net->max_width) || add_prod(&tot, n, 4 * d + net->c) ||
            add_prod(&tot, d, d + 1) ||
            (m == d ? add_prod(&tot, n, d * d) : add_prod(&tot, n, 2 * d)) ||
            nf_size_mul(tot, sizeof(double), &(size_t){0});
  return bad ? 0 : tot;
}

rn_work rn_layout(const rn_net *net, size_t n, double *work)
{
  size_t d = net->d, R = n * rn_tangents(net), L = net->n_layers;
  rn_work w;
  double *p = work;
  w.pt = p;    p += net->n_params;
  w.sigma = p; p += L;
  w.scale = p; p += L;
  w.u = p;     p += net->sum_out;
  w.v = p;     p += net->sum_norm;
  w.ld = p;    p += n * (rn_tangents(net) == d ? d * d : 2 * d);
  w.h = p;     p += n * net->sum_hidden;
  w.hd = p;    p += R * net->sum_hidden;
  w.tin = p;   p += R * d;
  w.tout = p;  p += R * d;
  w.tw = p;    p += R * d;
  for (int k = 0; k < 4; k++) { w.b[k] = p; p += R * net->max_width; }
  w.gpt = p;   p += net->n_params;
  for (int k = 0; k < 4; k++) { w.s[k] = p; p += n * d; }
  w.gc = p;    p += n * net->c;
  w.lu = p;
  return w;
}

/* Offset of layer l's W in the parameter vector (b_l follows W_l). */
static size_t param_offset(const rn_net *net, size_t l)
{
  size_t off = 0;
  for (size_t k = 0; k < l; k++) off += (net->width[k] + 1) * net->width[k + 1];
  return off;
}

/* Offset (per row) of hidden layer l's output in a record. */
static size_t hidden_offset(const rn_net *net, size_t l)
{
  size_t off = 0;
  for (size_t k = 0; k < l; k++) off += net->width[k + 1];
  return off;
}

/* Columns of layer l's W under spectral normalisation: x only in layer 0. */
static size_t norm_cols(const rn_net *net, size_t l) { return l == 0 ? net->d : net->width[l]; }

/* Euclidean norm of v[0..k). */
static double norm2(size_t k, const double *v) { return cblas_dnrm2((int)k, v, 1); }

/* sigma = |W v| of the q x pn block (leading dimension p) by power iteration
   on W^T W from v_j = 1 + j / (pn + 1), to max |v_k - v_{k-1}| <= tol or iters
   steps; u = W v / sigma (0 if W = 0). v_old: pn doubles of scratch. */
static double spectral_norm(size_t q, size_t pn, size_t p, const double *W, size_t iters,
                            double tol, double *u, double *v, double *v_old)
{
  for (size_t j = 0; j < pn; j++) v[j] = 1.0 + (double)j / (double)(pn + 1);
  cblas_dscal((int)pn, 1.0 / norm2(pn, v), v, 1);
  for (size_t it = 0; it < iters; it++) {
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)q, (int)pn, 1.0, W, (int)p, v, 1, 0.0, u, 1);
    double nu = norm2(q, u), diff = 0;
    if (nu == 0.0) break;
    memcpy(v_old, v, pn * sizeof *v);
    cblas_dgemv(CblasRowMajor, CblasTrans, (int)q, (int)pn, 1.0 / nu, W, (int)p, u, 1, 0.0, v, 1);
    double nv = norm2(pn, v);
    if (nv == 0.0) { memcpy(v, v_old, pn * sizeof *v); break; }
    cblas_dscal((int)pn, 1.0 / nv, v, 1);
    for (size_t j = 0; j < pn; j++) diff = fmax(diff, fabs(v[j] - v_old[j]));
    if (diff <= tol) break;
  }
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)q, (int)pn, 1.0, W, (int)p, v, 1, 0.0, u, 1);
  double sigma = norm2(q, u);
  if (sigma > 0) cblas_dscal((int)q, 1.0 / sigma, u, 1);
  return sigma;
}

void rn_normalize(const rn_net *net, const double *theta, rn_work *w)
{
  memcpy(w->pt, theta, net->n_params * sizeof *theta);
  double *u = w->u, *v = w->v, c = net->o.lipschitz;
  for (size_t l = 0; l < net->n_layers; l++) {
    size_t p = net->width[l], q = net->width[l + 1], pn = norm_cols(net, l);
    size_t off = param_offset(net, l);
    double sigma = spectral_norm(q, pn, p, theta + off, net->o.power_iters, net->o.power_tol,
                                 u, v, w->b[0]);
    double s = sigma > c ? c / sigma : 1.0;
    w->sigma[l] = sigma;
    w->scale[l] = s;
    for (size_t a = 0; s < 1.0 && a < q; a++)
      for (size_t b = 0; b < pn; b++) w->pt[off + a * p + b] *= s;
    u += q;
    v += pn;
  }
}

void rn_normalize_backward(const rn_net *net, const double *theta, const rn_work *w,
                           double *g_theta)
{
  const double *u = w->u, *v = w->v, c = net->o.lipschitz;
  for (size_t l = 0; l < net->n_layers; l++) {
    size_t p = net->width[l], q = net->width[l + 1], pn = norm_cols(net, l);
    size_t off = param_offset(net, l), len = (p + 1) * q;
    const double *G = w->gpt + off, *W = theta + off;
    double s = w->scale[l], kappa = 0;
    if (s < 1.0) {
      for (size_t a = 0; a < q; a++)
        for (size_t b = 0; b < pn; b++) kappa += G[a * p + b] * W[a * p + b];
      kappa *= c / (w->sigma[l] * w->sigma[l]);
    }
    for (size_t k = 0; k < len; k++) {
      size_t a = k / p, b = k % p;
      int normed = k < p * q && b < pn && s < 1.0;
      g_theta[off + k] += normed ? s * G[k] - kappa * u[a] * v[b] : G[k];
    }
    u += q;
    v += pn;
  }
}

/* Y = Y + b, then tanh unless last, for n rows of width q. */
NF_VECTOR_LOOP static void bias_tanh(size_t n, size_t q, const double *b, int last, double *y)
{
  for (size_t i = 0; i < n; i++) {
    double *r = y + i * q;
    if (last)
      for (size_t j = 0; j < q; j++) r[j] += b[j];
    else
      for (size_t j = 0; j < q; j++) r[j] = nf_tanh(r[j] + b[j]);
  }
}

/* out (rows x q) = in W^T (+ beta out) for in of width k, W's first k columns of leading dim p. */
static void times_wt(size_t rows, size_t q, size_t k, size_t p, const double *in, size_t ld_in,
                     const double *W, double beta, double *out)
{
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)q, (int)k, 1.0, in,
              (int)ld_in, W, (int)p, beta, out, (int)q);
}

/* out (rows x k) = delta W[:, :k] (+ beta out), delta rows x q. */
static void times_w(size_t rows, size_t q, size_t k, size_t p, const double *delta,
                    const double *W, double beta, double *out)
{
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)k, (int)q, 1.0, delta,
              (int)q, W, (int)p, beta, out, (int)k);
}

/* gW[:, :k] (leading dim p) += delta^T in, delta rows x q, in rows x k. */
static void add_outer(size_t rows, size_t q, size_t k, size_t p, const double *delta,
                      const double *in, double *gW)
{
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)q, (int)k, (int)rows, 1.0, delta,
              (int)q, in, (int)k, 1.0, gW, (int)p);
}

/* gb += column sums of the rows x q matrix delta. */
static void add_colsums(size_t rows, size_t q, const double *delta, double *gb)
{
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < q; j++) gb[j] += delta[i * q + j];
}

/* g[r, :] *= 1 - h[r / m, :]^2 for the n m rows of width k. */
NF_VECTOR_LOOP static void tanh_prime(size_t n, size_t m, size_t k, const double *h, double *g)
{
  for (size_t r = 0; r < n * m; r++) {
    const double *hr = h + (r / m) * k;
    for (size_t j = 0; j < k; j++) g[r * k + j] *= 1.0 - hr[j] * hr[j];
  }
}

void rn_backward(const rn_net *net, const rn_work *w, size_t n, const double *x,
                 const double *ctx, const double *gy, double *gx, double *gctx, double *gpt)
{
  size_t d = net->d, c = net->c;
  const double *delta = gy;
  for (size_t l = net->n_layers; l-- > 0;) {
    size_t p = net->width[l], q = net->width[l + 1], off = param_offset(net, l);
    const double *W = w->pt + off;
    if (gpt && l > 0) add_outer(n, q, p, p, delta, w->h + n * hidden_offset(net, l - 1), gpt + off);
    if (gpt && l == 0) {
      add_outer(n, q, d, p, delta, x, gpt + off);
      if (c) add_outer(n, q, c, p, delta, ctx, gpt + off + d);
    }
    if (gpt) add_colsums(n, q, delta, gpt + off + p * q);
    if (l == 0) {
      if (gx) times_w(n, q, d, p, delta, W, 0.0, gx);
      if (gctx && c) {
        double *tmp = delta == w->b[0] ? w->b[1] : w->b[0];
        times_w(n, q, c, p, delta, W + d, 0.0, tmp);
        for (size_t k = 0; k < n * c; k++) gctx[k] += tmp[k];
      }
      break;
    }
    double *g_prev = w->b[l % 2];
    times_w(n, q, p, p, delta, W, 0.0, g_prev);
    tanh_prime(n, 1, p, w->h + n * hidden_offset(net, l - 1), g_prev);
    delta = g_prev;
  }
}

/* One pass through the layers: the primal (m == 0: n rows of [x, ctx], bias
   and tanh, hidden outputs recorded in w->h) or the tangent (n m rows of v,
   dh = (1 - h^2) da, recorded in w->hd). */
static void pass(const rn_net *net, const rn_work *w, size_t n, size_t m, const double *x,
                 const double *ctx, double *y)
{
  size_t d = net->d, L = net->n_layers, R = m ? n * m : n;
  const double *in = x;
  for (size_t l = 0; l < L; l++) {
    size_t p = net->width[l], q = net->width[l + 1];
    const double *W = w->pt + param_offset(net, l);
    double *out = l + 1 == L ? y : (m ? w->hd : w->h) + R * hidden_offset(net, l);
    times_wt(R, q, l == 0 ? d : p, p, in, l == 0 ? d : p, W, 0.0, out);
    if (!m && l == 0 && net->c) times_wt(n, q, net->c, p, ctx, net->c, W + d, 1.0, out);
    if (!m) bias_tanh(n, q, W + p * q, l + 1 == L, out);
    if (m && l + 1 < L) tanh_prime(n, m, q, w->h + n * hidden_offset(net, l), out);
    in = out;
  }
}

void rn_forward(const rn_net *net, const rn_work *w, size_t n, const double *x,
                const double *ctx, double *y)
{
  pass(net, w, n, 0, x, ctx, y);
}

void rn_tangent(const rn_net *net, const rn_work *w, size_t n, size_t m, const double *v,
                double *jv)
{
  pass(net, w, n, m, v, NULL, jv);
}

/* The reverse step through tanh for the pair (forward, tangent) of hidden
   layer k: with hb = dS/dh (n rows) and hdb = dS/d(dh) (n m rows),
     abar  = (1 - h^2) hb + sum over the row's tangents of tanh''(a) da * hdb
           = (1 - h^2) hb - 2 h sum dh * hdb,
     adbar = (1 - h^2) hdb,
   in place (hb -> abar, hdb -> adbar). */
NF_VECTOR_LOOP static void tanh_second(size_t n, size_t m, size_t k, const double *h,
                                       const double *hd, double *hb, double *hdb)
{
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < k; j++) {
      double hij = h[i * k + j], s1 = 1.0 - hij * hij, acc = 0;
      for (size_t t = 0; t < m; t++) {
        size_t r = (i * m + t) * k + j;
        acc += hd[r] * hdb[r];
        hdb[r] *= s1;
      }
      hb[i * k + j] = s1 * hb[i * k + j] - 2.0 * hij * acc;
    }
}

void rn_wjv_grad(const rn_net *net, const rn_work *w, size_t n, size_t m, const double *x,
                 const double *ctx, const double *v, const double *wt, double *gx,
                 double *gctx)
{
  size_t d = net->d, c = net->c, R = n * m;
  const double *ac = wt, *aa = NULL; /* dS/d(da_l) (R rows), dS/da_l (n rows; NULL: zero) */
  for (size_t l = net->n_layers; l-- > 0;) {
    size_t p = net->width[l], q = net->width[l + 1], off = param_offset(net, l);
    const double *W = w->pt + off;
    double *gW = w->gpt + off;
    if (l > 0) {
      const double *hp = w->h + n * hidden_offset(net, l - 1);
      const double *hdp = w->hd + R * hidden_offset(net, l - 1);
      add_outer(R, q, p, p, ac, hdp, gW);
      if (aa) {
        add_outer(n, q, p, p, aa, hp, gW);
        add_colsums(n, q, aa, gW + p * q);
      }
      double *hdb = w->b[2 * (l % 2)], *hb = w->b[2 * (l % 2) + 1];
      times_w(R, q, p, p, ac, W, 0.0, hdb);
      if (aa)
        times_w(n, q, p, p, aa, W, 0.0, hb);
      else
        memset(hb, 0, n * p * sizeof *hb);
      tanh_second(n, m, p, hp, hdp, hb, hdb);
      ac = hdb;
      aa = hb;
      continue;
    }
    add_outer(R, q, d, p, ac, v, gW);
    if (!aa) { /* no hidden layer: J does not depend on x */
      memset(gx, 0, n * d * sizeof *gx);
      break;
    }
    add_outer(n, q, d, p, aa, x, gW);
    if (c) add_outer(n, q, c, p, aa, ctx, gW + d);
    add_colsums(n, q, aa, gW + p * q);
    times_w(n, q, d, p, aa, W, 0.0, gx);
    if (gctx && c) {
      double *tmp = w->b[0]; /* free: ac and aa are in b[2], b[3] (layer 1's) */
      times_w(n, q, c, p, aa, W + d, 0.0, tmp);
      for (size_t k = 0; k < n * c; k++) gctx[k] += tmp[k];
    }
  }
}
