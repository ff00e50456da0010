/* lib/train/map.c — MAP estimates with a flow prior under Gaussian noise
   (nflow/map.h): per-row L-BFGS or Adam on f = -J, the rows still running
   evaluated together in one batch per iteration. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/map.h"

#define MAP_FN "nf_map_gaussian_noise"
#define MAP_MAX_MEMORY 100
#define LS_MAX_TRIALS 40 /* line-search trials before a row is declared stalled */
#define ARMIJO_C1 1e-4
#define AW_DELTA 0.1 /* Hager & Zhang's approximate Wolfe constants */
#define AW_SIGMA 0.9
#define AW_EPS 1e-10
#define ADAM_B1 0.9
#define ADAM_B2 0.999
#define ADAM_EPS 1e-8
#define HALF_LOG_2PI 0.91893853320467274178

enum { ROW_RUN = 0, ROW_DONE, ROW_STALL };

nf_map_opts nf_map_defaults(void)
{
  nf_map_opts o = {.method = NF_MAP_LBFGS, .max_iter = 1000, .grad_tol = 1e-6, .lr = 1e-2,
                   .memory = 8};
  return o;
}

/* What every row shares: the prior, the block's observations and contexts, 1 / noise_var. */
typedef struct map_problem {
  const nf_flow *prior;
  nf_flow_ws *ws;
  size_t d, c;
  const double *data, *ctx; /* the current block's rows */
  const double *inv_var;    /* d */
  double log_norm;          /* 1/2 sum log(2 pi v) */
  nf_map_opts o;
} map_problem;

/* One block's state for up to B rows: iterate, trial point, direction, history. */
typedef struct map_block {
  size_t B, m;
  double *y, *g, *f;    /* current point, grad f, f = -J */
  double *yt, *gt, *ft; /* trial point */
  double *p, *gp, *alpha;
  double *S, *Y, *rho;  /* L-BFGS pairs (B x m x d, B x m x d, B x m); Adam's moments in S, Y */
  double *xb, *cb, *lpb, *gxb; /* the flow call's gathered rows */
  size_t *state, *iters, *hlen, *head, *tries, *idx;
} map_block;

static double dot(size_t d, const double *a, const double *b)
{
  double s = 0.0;
  for (size_t t = 0; t < d; t++) s += a[t] * b[t];
  return s;
}

/* f_i = -J(x_i) = 1/2 sum_t (x_t - d_t)^2 / v_t + 1/2 sum log(2 pi v) - log p(x_i) and
   g_i = grad f = (x - d) / v - grad log p, for the block rows idx[0..k) of x; the rows are
   gathered into one batch of the flow. */
static nf_status eval_rows(const map_problem *P, map_block *b, size_t k, const size_t *idx,
                           const double *x, double *f, double *g)
{
  size_t d = P->d, c = P->c;
  for (size_t j = 0; j < k; j++) {
    memcpy(b->xb + j * d, x + idx[j] * d, d * sizeof *x);
    if (c) memcpy(b->cb + j * c, P->ctx + idx[j] * c, c * sizeof *x);
  }
  nf_status st = nf_flow_log_prob_grad_ws(P->prior, P->ws, 0, k, b->xb, c ? b->cb : NULL,
                                          b->lpb, b->gxb, NULL);
  if (st) return nf_fail_prefixed(st, MAP_FN);
  for (size_t j = 0; j < k; j++) {
    size_t i = idx[j];
    const double *xi = x + i * d, *di = P->data + i * d, *gl = b->gxb + j * d;
    double *gi = g + i * d, s = 0.0;
    for (size_t t = 0; t < d; t++) {
      double e = (xi[t] - di[t]) * P->inv_var[t];
      s += e * (xi[t] - di[t]);
      gi[t] = e - gl[t];
    }
    f[i] = 0.5 * s + P->log_norm - b->lpb[j];
  }
  return NF_OK;
}

/* p = -H g by the two-loop recursion over row i's stored pairs, newest first, with
   H0 = (s'y / y'y) I from the newest pair (Nocedal & Wright 2006, alg. 7.4). */
static void lbfgs_direction(const map_block *b, size_t d, size_t i)
{
  size_t m = b->m, len = b->hlen[i];
  const double *S = b->S + i * m * d, *Y = b->Y + i * m * d, *rho = b->rho + i * m;
  double *p = b->p + i * d, a[MAP_MAX_MEMORY], gamma = 1.0;
  for (size_t t = 0; t < d; t++) p[t] = -b->g[i * d + t];
  for (size_t j = 0; j < len; j++) {
    size_t s = (b->head[i] + m - 1 - j) % m;
    a[j] = rho[s] * dot(d, S + s * d, p);
    for (size_t t = 0; t < d; t++) p[t] -= a[j] * Y[s * d + t];
  }
  if (len) {
    size_t s = (b->head[i] + m - 1) % m;
    gamma = 1.0 / (rho[s] * dot(d, Y + s * d, Y + s * d));
  }
  for (size_t t = 0; t < d; t++) p[t] *= gamma;
  for (size_t j = len; j-- > 0;) {
    size_t s = (b->head[i] + m - 1 - j) % m;
    double beta = rho[s] * dot(d, Y + s * d, p);
    for (size_t t = 0; t < d; t++) p[t] += (a[j] - beta) * S[s * d + t];
  }
}

/* Stores the pair s = yt - y, y = gt - g of row i if its curvature s'y is positive. */
static void lbfgs_push(map_block *b, size_t d, size_t i)
{
  size_t m = b->m, slot = b->head[i];
  double *s = b->S + (i * m + slot) * d, *yv = b->Y + (i * m + slot) * d;
  for (size_t t = 0; t < d; t++) {
    s[t] = b->yt[i * d + t] - b->y[i * d + t];
    yv[t] = b->gt[i * d + t] - b->g[i * d + t];
  }
  double sy = dot(d, s, yv);
  if (!(sy > 1e-12 * sqrt(dot(d, s, s) * dot(d, yv, yv)))) return;
  b->rho[i * m + slot] = 1.0 / sy;
  b->head[i] = (slot + 1) % m;
  if (b->hlen[i] < m) b->hlen[i]++;
}

/* Row i moves to its trial point; it is done once ||g|| <= grad_tol. */
static void take_step(const map_problem *P, map_block *b, size_t i)
{
  size_t d = P->d;
  if (P->o.method == NF_MAP_LBFGS) lbfgs_push(b, d, i);
  memcpy(b->y + i * d, b->yt + i * d, d * sizeof *b->y);
  memcpy(b->g + i * d, b->gt + i * d, d * sizeof *b->g);
  b->f[i] = b->ft[i];
  b->iters[i]++;
  if (sqrt(dot(d, b->g + i * d, b->g + i * d)) <= P->o.grad_tol) b->state[i] = ROW_DONE;
}

/* Armijo's f(a) <= f(0) + c1 a g'p, or Hager & Zhang's approximate Wolfe conditions
   (2 delta - 1) g'p >= g(a)'p >= sigma g'p with f(a) <= f(0) + eps |f(0)|, which hold
   near the optimum where f's decrease is below its rounding. */
static int step_ok(double f0, double fa, double a, double gp0, double gpa)
{
  if (!isfinite(fa) || !isfinite(gpa)) return 0;
  if (fa <= f0 + ARMIJO_C1 * a * gp0) return 1;
  return fa <= f0 + AW_EPS * fabs(f0) && gpa <= (2.0 * AW_DELTA - 1.0) * gp0 &&
         gpa >= AW_SIGMA * gp0;
}

/* The next trial step: the minimiser of the quadratic through f(0), f'(0) = g'p and f(a),
   kept within [a / 10, a / 2] (a / 10 if f(a) is not finite). */
static double backtrack(double f0, double fa, double a, double gp0)
{
  if (!isfinite(fa)) return 0.1 * a;
  double den = 2.0 * (fa - f0 - gp0 * a);
  double q = den > 0 ? -gp0 * a * a / den : 0.5 * a;
  return fmin(fmax(q, 0.1 * a), 0.5 * a);
}

/* Sets row i's L-BFGS direction and first trial step (1, or 1 / ||g|| before any pair);
   a direction that does not descend is replaced by -g and the history dropped. */
static void lbfgs_start_row(map_block *b, size_t d, size_t i)
{
  const double *g = b->g + i * d;
  double *p = b->p + i * d;
  lbfgs_direction(b, d, i);
  b->gp[i] = dot(d, g, p);
  if (!(b->gp[i] < 0)) {
    b->hlen[i] = 0;
    for (size_t t = 0; t < d; t++) p[t] = -g[t];
    b->gp[i] = dot(d, g, p);
  }
  b->alpha[i] = b->hlen[i] ? 1.0 : fmin(1.0, 1.0 / sqrt(-b->gp[i]));
  b->tries[i] = 0;
}

/* One L-BFGS iteration of the k running rows idx[0..k): backtracking line searches, all
   rows' trials evaluated in one batch per pass, until each row has stepped or stalled. */
static nf_status lbfgs_iteration(const map_problem *P, map_block *b, size_t k)
{
  size_t d = P->d;
  for (size_t j = 0; j < k; j++) lbfgs_start_row(b, d, b->idx[j]);
  while (k > 0) {
    for (size_t j = 0; j < k; j++) {
      size_t i = b->idx[j];
      for (size_t t = 0; t < d; t++)
        b->yt[i * d + t] = b->y[i * d + t] + b->alpha[i] * b->p[i * d + t];
    }
    nf_status st = eval_rows(P, b, k, b->idx, b->yt, b->ft, b->gt);
    if (st) return st;
    size_t k2 = 0;
    for (size_t j = 0; j < k; j++) {
      size_t i = b->idx[j];
      double gpa = dot(d, b->gt + i * d, b->p + i * d);
      if (step_ok(b->f[i], b->ft[i], b->alpha[i], b->gp[i], gpa)) take_step(P, b, i);
      else if (++b->tries[i] >= LS_MAX_TRIALS) b->state[i] = ROW_STALL;
      else {
        b->alpha[i] = backtrack(b->f[i], b->ft[i], b->alpha[i], b->gp[i]);
        b->idx[k2++] = i;
      }
    }
    k = k2;
  }
  return NF_OK;
}

/* One Adam step (Kingma & Ba 2015) of the k running rows idx[0..k) with the moments in
   S and Y; a row whose step lands where f or g is not finite stalls where it was. */
static nf_status adam_iteration(const map_problem *P, map_block *b, size_t k)
{
  size_t d = P->d;
  for (size_t j = 0; j < k; j++) {
    size_t i = b->idx[j];
    double t = (double)(b->iters[i] + 1);
    double step = P->o.lr / (1.0 - pow(ADAM_B1, t)), ib2 = 1.0 / (1.0 - pow(ADAM_B2, t));
    double *m1 = b->S + i * b->m * d, *m2 = b->Y + i * b->m * d;
    for (size_t q = 0; q < d; q++) {
      double g = b->g[i * d + q];
      m1[q] = ADAM_B1 * m1[q] + (1.0 - ADAM_B1) * g;
      m2[q] = ADAM_B2 * m2[q] + (1.0 - ADAM_B2) * g * g;
      b->yt[i * d + q] = b->y[i * d + q] - step * m1[q] / (sqrt(m2[q] * ib2) + ADAM_EPS);
    }
  }
  nf_status st = eval_rows(P, b, k, b->idx, b->yt, b->ft, b->gt);
  if (st) return st;
  for (size_t j = 0; j < k; j++) {
    size_t i = b->idx[j];
    if (isfinite(b->ft[i]) && isfinite(dot(d, b->gt + i * d, b->gt + i * d))) take_step(P, b, i);
    else b->state[i] = ROW_STALL;
  }
  return NF_OK;
}

/* Runs rows 0..B-1 of the block (starting points in b->y) to convergence, stall or
   max_iter; *iters gets the most iterations a row took. */
static nf_status run_block(const map_problem *P, map_block *b, size_t B, size_t *iters)
{
  size_t d = P->d;
  memset(b->S, 0, B * b->m * d * sizeof *b->S);
  memset(b->Y, 0, B * b->m * d * sizeof *b->Y);
  for (size_t i = 0; i < B; i++) {
    b->idx[i] = i;
    b->iters[i] = b->hlen[i] = b->head[i] = 0;
  }
  nf_status st = eval_rows(P, b, B, b->idx, b->y, b->f, b->g);
  for (size_t i = 0; i < B && !st; i++) {
    double gn = sqrt(dot(d, b->g + i * d, b->g + i * d));
    b->state[i] = gn <= P->o.grad_tol ? ROW_DONE : isfinite(b->f[i] + gn) ? ROW_RUN : ROW_STALL;
  }
  for (size_t it = 0; it < P->o.max_iter && !st; it++) {
    size_t k = 0;
    for (size_t i = 0; i < B; i++)
      if (b->state[i] == ROW_RUN) b->idx[k++] = i;
    if (k == 0) break;
    st = P->o.method == NF_MAP_LBFGS ? lbfgs_iteration(P, b, k) : adam_iteration(P, b, k);
  }
  *iters = 0;
  for (size_t i = 0; i < B; i++) *iters = b->iters[i] > *iters ? b->iters[i] : *iters;
  return st;
}

/* NF_EINVAL naming the first option out of range (map.h), else NF_OK. */
static nf_status check_opts(const nf_map_opts *o)
{
  if (o->method != NF_MAP_LBFGS && o->method != NF_MAP_ADAM)
    return nf_fail(NF_EINVAL, "%s: unknown method %d (expected NF_MAP_LBFGS or NF_MAP_ADAM)",
                   MAP_FN, (int)o->method);
  if (o->max_iter == 0) return nf_fail(NF_EINVAL, "%s: max_iter must be >= 1", MAP_FN);
  if (!(o->grad_tol >= 0) || !isfinite(o->grad_tol))
    return nf_fail(NF_EINVAL, "%s: grad_tol must be finite and >= 0, got %g", MAP_FN,
                   o->grad_tol);
  if (o->method == NF_MAP_ADAM) return nf_check_positive(MAP_FN, "lr", o->lr);
  if (o->memory == 0 || o->memory > MAP_MAX_MEMORY)
    return nf_fail(NF_EINVAL, "%s: memory must be in 1..%d, got %zu", MAP_FN, MAP_MAX_MEMORY,
                   o->memory);
  return NF_OK;
}

/* NF_ENONFINITE naming the first non-finite entry (row, column) of the n x w array v. */
static nf_status check_finite(const char *what, size_t n, size_t w, const double *v)
{
  size_t bad = nf_first_nonfinite(n * w, v);
  if (bad < n * w)
    return nf_fail(NF_ENONFINITE, "%s: %s row %zu, column %zu is %g, not finite", MAP_FN, what,
                   bad / w, bad % w, v[bad]);
  return NF_OK;
}

/* Every argument check of nf_map_gaussian_noise, in the order map.h lists them. */
static nf_status check_args(const nf_flow *prior, const nf_flow_ws *ws, size_t n,
                            const double *data, const double *noise_var, const double *ctx,
                            const nf_map_opts *o, const double *y)
{
  if (!prior || !ws || !data || !noise_var || !y)
    return nf_fail(NF_EINVAL, "%s: NULL %s", MAP_FN,
                   !prior ? "prior" : !ws ? "workspace" : !data ? "data"
                   : !noise_var ? "noise_var" : "y");
  if (n == 0) return nf_fail(NF_EINVAL, "%s: n is 0", MAP_FN);
  size_t d = nf_flow_dim(prior), c = nf_flow_ctx_dim(prior), nd, nc;
  if (!c != !ctx)
    return nf_fail(NF_EINVAL, "%s: ctx must be %s for a%s prior", MAP_FN,
                   c ? "given" : "NULL", c ? " conditional" : "n unconditional");
  nf_status st = check_opts(o);
  if (st) return st;
  for (size_t t = 0; t < d; t++)
    if (!(noise_var[t] > 0) || !isfinite(noise_var[t]))
      return nf_fail(NF_EINVAL, "%s: noise_var[%zu] must be finite and > 0, got %g", MAP_FN, t,
                     noise_var[t]);
  if ((st = nf_count_doubles(MAP_FN, "data", n, d, &nd)) ||
      (st = nf_count_doubles(MAP_FN, "ctx", n, c ? c : 1, &nc)))
    return st;
  if ((st = check_finite("data", n, d, data)) || (st = check_finite("y", n, d, y))) return st;
  return c ? check_finite("ctx", n, c, ctx) : NF_OK;
}

/* Carves the block's arrays for B rows out of one allocation (*mem, to free). */
static nf_status block_alloc(map_block *b, size_t B, size_t m, size_t d, size_t c, void **mem)
{
  size_t md, per, tot, words;
  if (nf_size_mul3(2 * m + 7, d, 1, &md) || nf_size_add(md, c + m + 5, &per) ||
      nf_size_mul(B, per, &tot) || nf_size_mul(B, 6, &words) || nf_size_add(tot, words, &tot))
    return nf_fail(NF_EINVAL, "%s: the optimiser's state for %zu rows overflows", MAP_FN, B);
  double *w = nf_alloc_n(tot, sizeof(double));
  if (!w) return nf_fail(NF_ENOMEM, "%s: out of memory for %zu rows of dimension %zu", MAP_FN, B, d);
  *mem = w;
  b->B = B;
  b->m = m;
  double **vec[] = {&b->y, &b->g, &b->yt, &b->gt, &b->p, &b->xb, &b->gxb};
  for (size_t j = 0; j < sizeof vec / sizeof *vec; j++, w += B * d) *vec[j] = w;
  b->S = w, w += B * m * d;
  b->Y = w, w += B * m * d;
  b->rho = w, w += B * m;
  b->cb = w, w += B * c;
  double **sc[] = {&b->f, &b->ft, &b->gp, &b->alpha, &b->lpb};
  for (size_t j = 0; j < sizeof sc / sizeof *sc; j++, w += B) *sc[j] = w;
  size_t *z = (size_t *)(void *)w; /* sizeof(size_t) <= sizeof(double) on every target */
  size_t **ix[] = {&b->state, &b->iters, &b->hlen, &b->head, &b->tries, &b->idx};
  for (size_t j = 0; j < sizeof ix / sizeof *ix; j++, z += B) *ix[j] = z;
  return NF_OK;
}

nf_status nf_map_gaussian_noise(const nf_flow *prior, nf_flow_ws *ws, size_t n,
                                const double *data, const double *noise_var, const double *ctx,
                                const nf_map_opts *opts, double *y, double *log_post,
                                nf_map_report *report)
{
  nf_map_opts o = opts ? *opts : nf_map_defaults();
  nf_status st = check_args(prior, ws, n, data, noise_var, ctx, &o, y);
  if (st) return st;
  size_t d = nf_flow_dim(prior), c = nf_flow_ctx_dim(prior);
  size_t B = nf_flow_ws_rows(ws) < n ? nf_flow_ws_rows(ws) : n;
  if (B == 0) return nf_fail(NF_EINVAL, "%s: the workspace has no rows", MAP_FN);
  size_t len = n * d; /* counted by check_args */
  double *out = nf_size_add(len, n, &len) || nf_size_add(len, d, &len)
                    ? NULL : nf_alloc_n(len, sizeof *out); /* staged y, log_post; 1 / v */
  if (!out) return nf_fail(NF_ENOMEM, "%s: out of memory for %zu rows", MAP_FN, n);
  double *inv_var = out + n * d + n, log_norm = 0.0;
  for (size_t t = 0; t < d; t++) {
    inv_var[t] = 1.0 / noise_var[t];
    log_norm += 0.5 * log(noise_var[t]) + HALF_LOG_2PI;
  }
  map_problem P = {prior, ws, d, c, data, ctx, inv_var, log_norm, o};
  map_block b;
  void *mem = NULL;
  if ((st = block_alloc(&b, B, o.method == NF_MAP_LBFGS ? o.memory : 1, d, c, &mem))) {
    free(out);
    return st;
  }
  nf_map_report rep = {0, 0, 0.0};
  for (size_t r0 = 0; r0 < n && !st; r0 += B) {
    size_t rows = n - r0 < B ? n - r0 : B, it;
    P.data = data + r0 * d;
    P.ctx = c ? ctx + r0 * c : NULL;
    memcpy(b.y, y + r0 * d, rows * d * sizeof *y);
    if ((st = run_block(&P, &b, rows, &it))) break;
    memcpy(out + r0 * d, b.y, rows * d * sizeof *y);
    for (size_t i = 0; i < rows; i++) {
      out[n * d + r0 + i] = -b.f[i];
      rep.converged_rows += b.state[i] == ROW_DONE;
      double gn = sqrt(dot(d, b.g + i * d, b.g + i * d));
      if (!isnan(rep.max_grad_norm) && !(gn <= rep.max_grad_norm)) rep.max_grad_norm = gn;
    }
    rep.iterations = it > rep.iterations ? it : rep.iterations;
  }
  if (!st) {
    memcpy(y, out, n * d * sizeof *y);
    if (log_post) memcpy(log_post, out + n * d, n * sizeof *log_post);
    if (report) *report = rep;
  }
  free(mem);
  free(out);
  return st;
}
