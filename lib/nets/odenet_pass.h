/* lib/nets/odenet_pass.h — the forward and reverse passes of the CNF dynamics
   network (see odenet.c for the equations and the workspace), written once and
   included twice by odenet.c: R = double with GEMM = cblas_dgemm (SINGLE 0),
   and R = float with GEMM = cblas_sgemm (SINGLE 1). SFX(x) names the copy;
   TANH is the activation's fast tanh in R. The interface stays double: the
   single copy converts the weights, z, the context and the directions into
   float once per call, and writes outputs and gradients back in double (the
   time parameters' gamma, beta and their cotangents are always double). */

/* The workspace of one call, cut into the buffers described in odenet.c. */
typedef struct SFX(frame) {
  size_t n, m, rows;
  int keep;                /* the reverse pass will run: keep every X_l, U_l, D1, D2 */
  R *xu, *y, *d1, *d2, *g[2];
  R *gam, *bet;            /* gamma, beta in R (the double arrays themselves when R is double) */
  const R *theta, *ctx;    /* the weights and the context in R */
  R *theta_buf, *ctx_buf, *gw; /* SINGLE: their float copies and a dS/dW block */
  double *gamma, *beta, *g_gamma, *g_beta;
} SFX(frame);

/* out[0..n) = in in R. */
static void SFX(load)(size_t n, const double *in, R *out)
{
#if SINGLE
  nf_to_float(n, in, out);
#else
  memcpy(out, in, n * sizeof *out);
#endif
}

/* out[0..n) = in in double. */
static void SFX(store)(size_t n, const R *in, double *out)
{
  for (size_t i = 0; i < n; i++) out[i] = in[i];
}

/* Cuts work into the buffers of a call with m directions per sample: the double
   arrays first, then the R ones (work_doubles counts both). */
static SFX(frame) SFX(frame_make)(const nf_odenet *net, size_t n, size_t m, double *work)
{
  SFX(frame) fr = {.n = n, .m = m, .rows = n * (1 + m)};
  size_t sum_q = net->q_off[net->n_layers], w = net->max_width;
  fr.gamma = work;
  fr.beta = fr.gamma + sum_q;
  fr.g_gamma = fr.beta + sum_q;
  fr.g_beta = fr.g_gamma + w;
  R *p = (R *)(fr.g_beta + w);
  fr.xu = p;
  p += fr.rows * net->xu_off[net->n_layers];
  fr.y = p;
  p += fr.rows * net->dim;
  fr.g[0] = p;
  p += fr.rows * w;
  fr.g[1] = p;
  p += fr.rows * w;
  fr.d1 = p;
  p += n * sum_q;
  fr.d2 = p;
  p += n * sum_q;
#if SINGLE
  fr.gam = p;
  fr.bet = p + sum_q;
  fr.ctx_buf = p + 2 * sum_q;
  fr.theta_buf = fr.ctx_buf + n * net->ctx_dim;
  fr.gw = fr.theta_buf + net->n_params;
#else
  (void)p;
  fr.gam = fr.gamma;
  fr.bet = fr.beta;
  fr.ctx_buf = fr.theta_buf = fr.gw = NULL;
#endif
  return fr;
}

/* X_l of layer l (rows x width[l]); U_l follows it (rows x q_l). */
static R *SFX(frame_x)(const nf_odenet *net, const SFX(frame) *fr, size_t l)
{
  return fr->xu + fr->rows * net->xu_off[l];
}

/* Output of a layer from U, one sample at a time (its primal row, then its m
   tangent rows while they are in cache): a = gamma u + beta, out = act(a),
   d1 = act'(a), d2 = act''(a) (d1 row i at d1 + i d1_stride: 0 reuses one row
   when the reverse pass will not run; d2 NULL: not wanted), or out = a for the
   last layer (d1 == NULL); tangent rows out' = act'(a) gamma u'. tanh is the
   vectorisable TANH. */
CONTRACT NF_VECTOR_LOOP static void SFX(layer_output)(nf_odenet_act act, const SFX(frame) *fr, size_t q,
                                             const R *restrict gam, const R *restrict bet,
                                             const R *restrict u, R *restrict d1,
                                             size_t d1_stride, R *restrict d2, R *restrict out)
{
  size_t n = fr->n, m = fr->m;
  for (size_t i = 0; i < n; i++) {
    const R *ui = u + i * q;
    R *oi = out + i * q;
    if (!d1) {
      for (size_t j = 0; j < q; j++) oi[j] = gam[j] * ui[j] + bet[j];
      for (size_t k = 0; k < m; k++) {
        size_t r = (n + i * m + k) * q;
        for (size_t j = 0; j < q; j++) out[r + j] = gam[j] * u[r + j];
      }
      continue;
    }
    R *d1i = d1 + i * d1_stride;
    if (act == NF_ODENET_TANH) {
      for (size_t j = 0; j < q; j++) {
        R y = TANH(gam[j] * ui[j] + bet[j]);
        oi[j] = y;
        d1i[j] = 1 - y * y;
      }
      if (d2)
        for (size_t j = 0; j < q; j++) d2[i * q + j] = -2 * oi[j] * d1i[j];
    } else {
      for (size_t j = 0; j < q; j++) {
        double s[3];
        act_eval(act, gam[j] * ui[j] + bet[j], s);
        oi[j] = (R)s[0];
        d1i[j] = (R)s[1];
        if (d2) d2[i * q + j] = (R)s[2];
      }
    }
    for (size_t k = 0; k < m; k++) {
      size_t r = (n + i * m + k) * q;
      for (size_t j = 0; j < q; j++) out[r + j] = d1i[j] * gam[j] * u[r + j];
    }
  }
}

/* Tangent rows of X_0: the directions dirs (n x dim, m = 1) or, for
   dirs == NULL (m = dim), the unit vectors e_1..e_dim of every sample. */
static void SFX(set_directions)(size_t n, size_t m, size_t dim, const double *dirs, R *x)
{
  if (dirs) {
    SFX(load)(n * dim, dirs, x);
    return;
  }
  memset(x, 0, n * m * dim * sizeof *x);
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < m; k++) x[(i * m + k) * dim + k] = 1;
}

/* C = A B for a thin inner dimension k (< 8): C[r, j] = sum_s A[r, s] B[s, j]
   (A rows x k, leading dimension lda; B k x w, leading dimension ldb), summed
   over s in order; cheaper than a BLAS call of this shape. */
NF_VECTOR_LOOP static void SFX(thin_product)(size_t rows, size_t k, size_t w, const R *restrict a,
                                             size_t lda, const R *restrict b, size_t ldb,
                                             R *restrict c)
{
  for (size_t r = 0; r < rows; r++) {
    const R *ar = a + r * lda;
    R *cr = c + r * w;
    for (size_t j = 0; j < w; j++) cr[j] = ar[0] * b[j];
    for (size_t s = 1; s < k; s++)
      for (size_t j = 0; j < w; j++) cr[j] += ar[s] * b[s * ldb + j];
  }
}

/* U_0 = X_0 W_0^T (+ ctx W_ctx^T on the primal rows). For the unit directions
   of the exact trace the tangent rows are the columns of W_0: copied, not
   multiplied, and those of sample 0 (W_0^T) serve the primal rows' product. */
static void SFX(first_product)(const nf_odenet *net, const SFX(frame) *fr, int unit,
                               const R *W, R *u)
{
  size_t n = fr->n, m = fr->m, dim = net->dim, c = net->ctx_dim, p = dim + c, q = net->width[1];
  const R *x = SFX(frame_x)(net, fr, 0);
  if (unit) {
    R *wt = u + n * q; /* sample 0's m tangent rows: W_0^T, then copied to the others */
    for (size_t k = 0; k < m; k++)
      for (size_t j = 0; j < q; j++) wt[k * q + j] = W[j * p + k];
    for (size_t i = 1; i < n; i++) memcpy(wt + i * m * q, wt, m * q * sizeof *wt);
  }
  if (unit && dim < 8)
    SFX(thin_product)(n, dim, q, x, dim, u + n * q, q, u);
  else
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(unit ? n : fr->rows), (int)q, (int)dim, 1,
         x, (int)dim, W, (int)p, 0, u, (int)q);
  if (c > 0)
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)q, (int)c, 1, fr->ctx, (int)c,
         W + dim, (int)p, 1, u, (int)q);
}

/* U = X W^T for a narrow W (q outputs, q < 8): per row and output a dot
   product in 8 partial sums, cheaper than a BLAS call of this shape. */
NF_VECTOR_LOOP static void SFX(narrow_product)(size_t rows, size_t xw, size_t q,
                                               const R *restrict x, const R *restrict W,
                                               size_t p, R *restrict u)
{
  for (size_t r = 0; r < rows; r++)
    for (size_t j = 0; j < q; j++) {
      const R *xr = x + r * xw, *wj = W + j * p;
      R s[8] = {0}, t = 0;
      size_t k = 0;
      for (; k + 8 <= xw; k += 8)
        for (size_t v = 0; v < 8; v++) s[v] += xr[k + v] * wj[k + v];
      for (; k < xw; k++) t += xr[k] * wj[k];
      u[r * q + j] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + t;
    }
}

/* Forward pass of the primal rows (z, ctx) and the tangent rows (dirs, see
   set_directions) through every layer; Y receives f and J d. Without a reverse
   pass (fr->keep == 0) the layers run through the two cotangent buffers, U in
   g[0] and the next X in g[1], so the working set stays in cache. */
static void SFX(forward)(const nf_odenet *net, const double *params, SFX(frame) *fr, double t,
                         const double *z, const double *ctx, const double *dirs)
{
  size_t n = fr->n, rows = fr->rows, dim = net->dim;
  R *x0 = SFX(frame_x)(net, fr, 0);
#if SINGLE
  nf_to_float(net->n_params, params, fr->theta_buf);
  if (net->ctx_dim > 0) nf_to_float(n * net->ctx_dim, ctx, fr->ctx_buf);
  fr->theta = fr->theta_buf;
  fr->ctx = fr->ctx_buf;
#else
  fr->theta = params;
  fr->ctx = ctx;
#endif
  SFX(load)(n * dim, z, x0);
  if (fr->m > 0) SFX(set_directions)(n, fr->m, dim, dirs, x0 + n * dim);
  for (size_t l = 0; l < net->n_layers; l++) {
    size_t p = in_width(net, l), xw = net->width[l], q = net->width[l + 1];
    const R *W = fr->theta + net->param_off[l];
    double *gamma = fr->gamma + net->q_off[l], *beta = fr->beta + net->q_off[l];
    R *x = SFX(frame_x)(net, fr, l), *u = x + rows * xw;
    if (!fr->keep) {
      x = l == 0 ? x : fr->g[1];
      u = fr->g[0];
    }
    layer_time(net->kind, q, t, params + net->param_off[l] + p * q, gamma, beta);
#if SINGLE
    nf_to_float(q, gamma, fr->gam + net->q_off[l]);
    nf_to_float(q, beta, fr->bet + net->q_off[l]);
#endif
    if (l == 0)
      SFX(first_product)(net, fr, fr->m > 0 && !dirs, W, u);
    else if (q < 8)
      SFX(narrow_product)(rows, xw, q, x, W, p, u);
    else
      GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)q, (int)xw, 1, x, (int)xw, W,
           (int)p, 0, u, (int)q);
    int last = l + 1 == net->n_layers;
    R *d1 = last ? NULL : fr->d1 + (fr->keep ? n * net->q_off[l] : 0);
    R *d2 = last || !fr->keep ? NULL : fr->d2 + n * net->q_off[l];
    R *out = last ? fr->y : fr->keep ? SFX(frame_x)(net, fr, l + 1) : fr->g[1];
    SFX(layer_output)(net->act, fr, q, fr->gam + net->q_off[l], fr->bet + net->q_off[l], u, d1,
                      fr->keep ? q : 0, d2, out);
  }
}

/* One pass over G = dS/dH of a layer's output (rows x w), in place, per sample:
   through the activation if d1 != NULL (h = act(a), h' = act'(a) a', a' =
   gamma u'): g_a' = act'(a) g_h', g_a = act'(a) g_h + act''(a) sum_k a'_k g_h'_k;
   then with G = dS/dA: g_gamma[j] = sum over all rows of g u, g_beta[j] = sum
   over the primal rows of g, in double (g_gamma NULL: not wanted); then
   G <- gamma G. */
NF_VECTOR_LOOP static void SFX(cotangent_pass)(const SFX(frame) *fr, size_t w,
                                               const R *restrict d1, const R *restrict d2,
                                               const R *restrict gam, const R *restrict u,
                                               R *restrict g, double *restrict g_gamma,
                                               double *restrict g_beta)
{
  size_t n = fr->n, m = fr->m;
  if (g_gamma) {
    memset(g_gamma, 0, w * sizeof *g_gamma);
    memset(g_beta, 0, w * sizeof *g_beta);
  }
  for (size_t i = 0; i < n; i++) {
    R *gi = g + i * w;
    const R *ui = u + i * w;
    if (d1) {
      for (size_t j = 0; j < w; j++) gi[j] *= d1[i * w + j];
      for (size_t k = 0; k < m; k++) {
        size_t r = (n + i * m + k) * w;
        for (size_t j = 0; j < w; j++) {
          gi[j] += d2[i * w + j] * gam[j] * u[r + j] * g[r + j];
          g[r + j] *= d1[i * w + j];
        }
      }
    }
    if (g_gamma) {
      for (size_t j = 0; j < w; j++) {
        g_gamma[j] += (double)gi[j] * ui[j];
        g_beta[j] += gi[j];
      }
      for (size_t k = 0; k < m; k++) {
        size_t r = (n + i * m + k) * w;
        for (size_t j = 0; j < w; j++) g_gamma[j] += (double)g[r + j] * u[r + j];
      }
    }
    for (size_t j = 0; j < w; j++) gi[j] *= gam[j];
    for (size_t k = 0; k < m; k++) {
      size_t r = (n + i * m + k) * w;
      for (size_t j = 0; j < w; j++) g[r + j] *= gam[j];
    }
  }
}

/* dS/dW_l += G^T X_l (and the context columns of layer 0): straight into
   g_params in double, through the float block fr->gw in single. */
static void SFX(weight_gradient)(const nf_odenet *net, const SFX(frame) *fr, size_t l,
                                 const R *g, double *g_params)
{
  size_t n = fr->n, dim = net->dim, c = net->ctx_dim, p = in_width(net, l), xw = net->width[l],
         q = net->width[l + 1];
  const R *x = SFX(frame_x)(net, fr, l);
#if SINGLE
  R *gW = fr->gw, beta = 0;
#else
  R *gW = g_params + net->param_off[l], beta = 1;
#endif
  GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)q, (int)xw, (int)fr->rows, 1, g, (int)q, x,
       (int)xw, beta, gW, (int)p);
  if (l == 0 && c > 0)
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)q, (int)c, (int)n, 1, g, (int)q, fr->ctx,
         (int)c, beta, gW + dim, (int)p);
#if SINGLE
  nf_add_float(p * q, gW, g_params + net->param_off[l]);
#endif
}

/* Reverse pass from dS/dY in fr->g[0] (rows x dim): ADDS dS/dtheta into g_params
   (if non-NULL), writes dS/dt into *g_t (if non-NULL) and returns dS/d[z, ctx]
   (n x (dim + c), in a frame buffer) if want_input, else NULL. */
static const R *SFX(backward)(const nf_odenet *net, const double *params, const SFX(frame) *fr,
                              double t, double *g_params, double *g_t, int want_input)
{
  size_t n = fr->n, rows = fr->rows, top = net->n_layers - 1;
  R *g = fr->g[0], *g_next = fr->g[1];
  double dt = 0, *g_gamma = g_params || g_t ? fr->g_gamma : NULL;
  const R *result = NULL;
  SFX(cotangent_pass)(fr, net->dim, NULL, NULL, fr->gam + net->q_off[top],
                      SFX(frame_x)(net, fr, top) + rows * net->width[top], g, g_gamma, fr->g_beta);
  for (size_t l = top + 1; l-- > 0;) {
    size_t p = in_width(net, l), q = net->width[l + 1];
    const R *W = fr->theta + net->param_off[l];
    const double *tp = params + net->param_off[l] + p * q;
    if (g_gamma)
      dt += layer_time_backward(net->kind, q, t, tp, fr->gamma + net->q_off[l], g_gamma,
                                fr->g_beta, g_params ? g_params + net->param_off[l] + p * q : NULL);
    if (g_params) SFX(weight_gradient)(net, fr, l, g, g_params);
    if (l == 0) {
      if (want_input) {
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)p, (int)q, 1, g, (int)q, W,
             (int)p, 0, g_next, (int)p);
        result = g_next;
      }
      break;
    }
    if (q < 8)
      SFX(thin_product)(rows, q, p, g, q, W, p, g_next);
    else
      GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)p, (int)q, 1, g, (int)q, W,
           (int)p, 0, g_next, (int)p);
    SFX(cotangent_pass)(fr, p, fr->d1 + n * net->q_off[l - 1], fr->d2 + n * net->q_off[l - 1],
                        fr->gam + net->q_off[l - 1],
                        SFX(frame_x)(net, fr, l - 1) + rows * net->width[l - 1], g_next, g_gamma,
                        fr->g_beta);
    R *swap = g;
    g = g_next;
    g_next = swap;
  }
  if (g_t) *g_t = dt;
  return result;
}

/* Per sample: tr_i = sum_k d_ik . y_ik and jac_i = sum_k |y_ik|^2 over its m tangent
   rows (directions d in X_0, outputs J d in Y); kin_i = |f_i|^2; sums in double.
   NULL: not wanted. */
static void SFX(row_terms)(const nf_odenet *net, const SFX(frame) *fr, double *tr, double *kin,
                           double *jac)
{
  size_t n = fr->n, m = fr->m, dim = net->dim;
  const R *d = SFX(frame_x)(net, fr, 0), *y = fr->y;
  for (size_t i = 0; i < n; i++) {
    double s_tr = 0, s_jac = 0, s_kin = 0;
    for (size_t j = 0; j < dim; j++) s_kin += (double)y[i * dim + j] * y[i * dim + j];
    for (size_t k = 0; k < m; k++)
      for (size_t j = 0; j < dim; j++) {
        size_t r = (n + i * m + k) * dim + j;
        s_tr += (double)d[r] * y[r];
        s_jac += (double)y[r] * y[r];
      }
    if (tr) tr[i] = s_tr;
    if (kin) kin[i] = s_kin;
    if (jac) jac[i] = s_jac;
  }
}

/* dS/dY into g (rows x dim): primal rows a_i + 2 wk_i f_i, tangent rows
   w_i d_ik + 2 wj_i (J d)_ik; NULL weights are zero. */
static void SFX(seed_cotangent)(const nf_odenet *net, const SFX(frame) *fr, const request *q,
                                R *g)
{
  size_t n = fr->n, m = fr->m, dim = net->dim;
  const R *d = SFX(frame_x)(net, fr, 0), *y = fr->y;
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < dim; j++)
      g[i * dim + j] = (R)((q->a ? q->a[i * dim + j] : 0.0) +
                           (q->wk ? 2.0 * q->wk[i] * y[i * dim + j] : 0.0));
    for (size_t k = 0; k < m; k++)
      for (size_t j = 0; j < dim; j++) {
        size_t r = (n + i * m + k) * dim + j;
        g[r] = (R)((q->w ? q->w[i] * d[r] : 0.0) + (q->wj ? 2.0 * q->wj[i] * y[r] : 0.0));
      }
  }
}

/* One checked request: the forward pass, its outputs, and the reverse pass if
   any gradient is wanted. */
static void SFX(run)(const nf_odenet *net, const double *params, const request *q, double *work)
{
  size_t n = q->n, dim = net->dim, c = net->ctx_dim;
  SFX(frame) fr = SFX(frame_make)(net, n, q->m, work);
  fr.keep = q->g_z || q->g_params || q->g_t || q->g_ctx;
  SFX(forward)(net, params, &fr, q->t, q->z, q->ctx, q->dirs);
  if (q->f) SFX(store)(n * dim, fr.y, q->f);
  if (q->jv) SFX(store)(n * dim, fr.y + n * dim, q->jv);
  SFX(row_terms)(net, &fr, q->tr, q->kin, q->jac);
  if (!fr.keep) return;
  SFX(seed_cotangent)(net, &fr, q, fr.g[0]);
  const R *g_in = SFX(backward)(net, params, &fr, q->t, q->g_params, q->g_t, q->g_z || q->g_ctx);
  for (size_t i = 0; g_in && i < n; i++) {
    if (q->g_z) SFX(store)(dim, g_in + i * (dim + c), q->g_z + i * dim);
    for (size_t j = 0; q->g_ctx && j < c; j++) q->g_ctx[i * c + j] += g_in[i * (dim + c) + dim + j];
  }
}
