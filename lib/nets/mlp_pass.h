/* lib/nets/mlp_pass.h — the MLP's passes, written once for both arithmetics
   (nflow/precision.h) and included twice by mlp.c: with REAL = double,
   GEMM = cblas_dgemm and PASS(name) = name##_d, then with float, cblas_sgemm
   and name##_f. The activations' transcendental functions are evaluated in
   double (nf_tanh, expm1, nf_softplus: branch-free or exact) and rounded to
   REAL, so the double instance is the MLP's original code to the letter.
   Layer l: H_l = act(H_{l-1} W_l^T + b_l), H_{-1} = x, no activation last;
   backward: delta_{l-1} = (delta_l W_l) * act'(H_{l-1}), gW_l += delta_l^T
   H_{l-1}, gb_l += column sums of delta_l (rows = batch, one GEMM each). */

/* Y[i, :] = act(Y[i, :] + b) for n rows of width w, in place. */
NF_VECTOR_LOOP static void PASS(add_bias_activate)(nf_activation act, size_t n, size_t w,
                                                   const REAL *b, REAL *y)
{
  for (size_t i = 0; i < n; i++) {
    REAL *r = y + i * w;
    switch (act) {
    case NF_ACT_IDENTITY:
      for (size_t j = 0; j < w; j++) r[j] += b[j];
      break;
    case NF_ACT_RELU:
      for (size_t j = 0; j < w; j++) {
        REAL v = r[j] + b[j];
        r[j] = 0.5 * (v + fabs(v)); /* max(v, 0), exact and branch-free */
      }
      break;
    case NF_ACT_TANH:
      for (size_t j = 0; j < w; j++) r[j] = nf_tanh(r[j] + b[j]);
      break;
    case NF_ACT_ELU:
      for (size_t j = 0; j < w; j++) {
        REAL v = r[j] + b[j];
        r[j] = v > 0 ? v : expm1(v);
      }
      break;
    case NF_ACT_SOFTPLUS:
      for (size_t j = 0; j < w; j++) r[j] = nf_softplus(r[j] + b[j]);
      break;
    }
  }
}

/* G = G * act'(.), with act' written in the activation's output H (relu: H > 0;
   tanh: 1 - H^2; elu: H > 0 ? 1 : H + 1; softplus: sigmoid = 1 - exp(-H)). */
NF_VECTOR_LOOP static void PASS(activation_backward)(nf_activation act, size_t n, size_t w,
                                                     const REAL *h, REAL *g)
{
  const size_t nw = n * w;
  switch (act) {
  case NF_ACT_IDENTITY:
    break;
  case NF_ACT_RELU:
    for (size_t k = 0; k < nw; k++) g[k] = h[k] > 0 ? g[k] : 0.0;
    break;
  case NF_ACT_TANH:
    for (size_t k = 0; k < nw; k++) g[k] *= 1.0 - h[k] * h[k];
    break;
  case NF_ACT_ELU:
    for (size_t k = 0; k < nw; k++) g[k] *= h[k] > 0 ? 1.0 : h[k] + 1.0;
    break;
  case NF_ACT_SOFTPLUS:
    for (size_t k = 0; k < nw; k++) g[k] *= -expm1(-h[k]);
    break;
  }
}

/* gb += column sums of the n x w matrix g. */
NF_VECTOR_LOOP static void PASS(add_column_sums)(size_t n, size_t w, const REAL *restrict g,
                                                 REAL *restrict gb)
{
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < w; j++) gb[j] += g[i * w + j];
}

/* Start of the record of hidden layer l (its output H_l) in work. */
static REAL *PASS(hidden_record)(const nf_mlp *mlp, size_t n, size_t l, REAL *work)
{
  size_t off = 0;
  for (size_t k = 0; k < l; k++) off += mlp->width[k + 1];
  return work + n * off;
}

/* y = mlp(x) for n rows with the parameters params; records H_0.. into work. */
static void PASS(forward)(const nf_mlp *mlp, const REAL *params, size_t n, const REAL *x,
                          REAL *y, REAL *work)
{
  const REAL *in = x, *p = params;
  for (size_t l = 0; l < mlp->n_layers; l++) {
    size_t w_in = mlp->width[l], w_out = mlp->width[l + 1];
    int last = l + 1 == mlp->n_layers;
    REAL *out = last ? y : PASS(hidden_record)(mlp, n, l, work);
    const REAL *W = p, *b = p + w_in * w_out;
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)w_out, (int)w_in,
         1.0, in, (int)w_in, W, (int)w_in, 0.0, out, (int)w_out);
    PASS(add_bias_activate)(last ? NF_ACT_IDENTITY : mlp->act, n, w_out, b, out);
    in = out;
    p = b + w_out;
  }
}

/* Backpropagation of g_y through the pass PASS(forward) recorded in work:
   g_x = dL/dx (NULL: not wanted), g_params += dL/dparams (NULL: not wanted). */
static void PASS(backward)(const nf_mlp *mlp, const REAL *params, size_t n, const REAL *x,
                           const REAL *g_y, REAL *g_x, REAL *g_params, REAL *work)
{
  REAL *scratch[2] = {NULL, NULL};
  if (work) {
    scratch[0] = work + n * mlp->sum_hidden;
    scratch[1] = scratch[0] + n * mlp->max_hidden;
  }
  const REAL *delta = g_y; /* dL/d(pre-activation) of layer l */
  for (size_t l = mlp->n_layers; l-- > 0;) {
    size_t w_in = mlp->width[l], w_out = mlp->width[l + 1], off = layer_offset(mlp, l);
    const REAL *W = params + off;
    const REAL *h_prev = l > 0 ? PASS(hidden_record)(mlp, n, l - 1, work) : x;
    /* gW_l += delta^T H_{l-1}, gb_l += column sums of delta */
    if (g_params) {
      GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)w_out, (int)w_in, (int)n,
           1.0, delta, (int)w_out, h_prev, (int)w_in, 1.0, g_params + off, (int)w_in);
      PASS(add_column_sums)(n, w_out, delta, g_params + off + w_in * w_out);
    }
    REAL *g_prev = l > 0 ? scratch[l % 2] : g_x;
    if (!g_prev) break;
    /* dL/dH_{l-1} = delta W_l, then through the activation of layer l - 1 */
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)w_in, (int)w_out,
         1.0, delta, (int)w_out, W, (int)w_in, 0.0, g_prev, (int)w_in);
    if (l > 0) PASS(activation_backward)(mlp->act, n, w_in, h_prev, g_prev);
    delta = g_prev;
  }
}

#undef REAL
#undef GEMM
#undef PASS
