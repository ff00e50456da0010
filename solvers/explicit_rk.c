/* solvers/explicit_rk.c — explicit Runge–Kutta backends: Euler, classical RK4
   (fixed steps) and Dormand–Prince 5(4) (Dormand & Prince 1980; FSAL, PI step
   size control after Gustafsson 1991 as in Hairer, Nørsett & Wanner's DOPRI5),
   and NF_GRAD_DISCRETE: reverse mode through the recorded accepted steps.

   One step from (t, y) with size h of an s-stage method (c, A, b):
     Y_i = y + h sum_{j<i} a_ij k_j,  k_i = f(t + c_i h, Y_i),  y' = y + h sum_i b_i k_i.
   DISCRETE differentiates exactly this map, step after step backwards, with the
   steps held fixed as fractions of t1 - t0: t_n = t0 + s_n (t1 - t0),
   h_n = phi_n (t1 - t0). For EULER and RK4 that is the method itself
   (phi_n = 1 / fixed_steps); for DOPRI5 it is the map with the accepted step
   sequence of the recorded solve frozen (the controller is not differentiated). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "solver.h"

#define RK_MAX_STAGES 7

/* Butcher tableau; e = b - b_hat (embedded error weights) for adaptive methods. */
typedef struct rk_tableau {
  int s;     /* stages */
  int s_sol; /* stages the solution depends on (DOPRI5's 7th serves the error estimate only) */
  int order; /* order of the embedded error estimate + 1 (5 for DOPRI5): step control exponent */
  int adaptive;
  double c[RK_MAX_STAGES];
  double a[RK_MAX_STAGES][RK_MAX_STAGES];
  double b[RK_MAX_STAGES];
  double e[RK_MAX_STAGES];
} rk_tableau;

static const rk_tableau rk_euler = {1, 1, 1, 0, {0}, {{0}}, {1}, {0}};

static const rk_tableau rk_rk4 = {4, 4, 4, 0,
                                  {0, 0.5, 0.5, 1},
                                  {{0}, {0.5}, {0, 0.5}, {0, 0, 1}},
                                  {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6},
                                  {0}};

static const rk_tableau rk_dopri5 = {
    7, 6, 5, 1,
    {0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1, 1},
    {{0},
     {1.0 / 5},
     {3.0 / 40, 9.0 / 40},
     {44.0 / 45, -56.0 / 15, 32.0 / 9},
     {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
     {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
     {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}},
    {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0},
    {71.0 / 57600, 0, -71.0 / 16695, 71.0 / 1920, -17253.0 / 339200, 22.0 / 525, -1.0 / 40}};

/* Step size control (Hairer & Wanner's DOPRI5): h_new = h * safety * err^-alpha * err_prev^beta. */
static const double rk_safety = 0.9, rk_alpha = 0.17, rk_beta = 0.04;
static const double rk_facmin = 0.2, rk_facmax = 10.0;

typedef struct rk_backend {
  const rk_tableau *tab;
  nf_ode_opts opts;
  size_t n, N;      /* states, states + quadratures (current size, nf_ode_resize) */
  size_t ncap;      /* states it was created for: every buffer fits ncap + its quadratures */
  double *K, *Y;    /* stage derivatives and stage states, RK_MAX_STAGES x N */
  double *ynew, *err;
  int record;       /* keep the tape of accepted steps (DISCRETE) */
  size_t len, cap;  /* tape: t_n, h_n, y_n of the accepted steps */
  double *tape_t, *tape_h, *tape_y;
  double *kbar;     /* RK_MAX_STAGES x n: cotangents of the stage derivatives */
  double *ybar, *acc, *ysc; /* n */
} rk_backend;

/* Frees a backend. */
static void rk_destroy(void *backend)
{
  rk_backend *be = backend;
  if (!be) return;
  free(be->K);
  free(be->Y);
  free(be->ynew);
  free(be->err);
  free(be->tape_t);
  free(be->tape_h);
  free(be->tape_y);
  free(be->kbar);
  free(be->ybar);
  free(be->acc);
  free(be->ysc);
  free(be);
}

/* A backend for the method of opts, sized for n states and nq quadratures. */
static void *rk_create(size_t n, size_t nq, size_t n_theta, int record, const nf_ode_opts *opts)
{
  (void)n_theta;
  rk_backend *be = calloc(1, sizeof *be);
  if (!be) goto oom;
  be->tab = opts->method == NF_ODE_EULER ? &rk_euler
            : opts->method == NF_ODE_RK4 ? &rk_rk4
                                          : &rk_dopri5;
  be->opts = *opts;
  be->n = be->ncap = n;
  be->N = n + nq;
  be->record = record;
  be->K = nf_dalloc(RK_MAX_STAGES * be->N);
  be->Y = nf_dalloc(RK_MAX_STAGES * be->N);
  be->ynew = nf_dalloc(be->N);
  be->err = nf_dalloc(be->N);
  if (!be->K || !be->Y || !be->ynew || !be->err) goto oom;
  if (record) {
    be->kbar = nf_dalloc(RK_MAX_STAGES * n);
    be->ybar = nf_dalloc(n);
    be->acc = nf_dalloc(n);
    be->ysc = nf_dalloc(n);
    if (!be->kbar || !be->ybar || !be->acc || !be->ysc) goto oom;
  }
  return be;
oom:
  rk_destroy(be);
  nf_fail(NF_ENOMEM, "out of memory");
  return NULL;
}

/* Makes the backend integrate n states and nq quadratures: only the strides
   change (every buffer is sized for the capacity), so nothing is allocated. */
static nf_status rk_resize(void *backend, size_t n, size_t nq, size_t n_theta, int *built)
{
  (void)n_theta;
  rk_backend *be = backend;
  be->n = n;
  be->N = n + nq;
  be->len = 0;
  *built = 0;
  return NF_OK;
}

/* Bytes of a tape of `steps` rows (t, h and n states); SIZE_MAX if that overflows. */
static size_t tape_bytes(size_t steps, size_t n)
{
  size_t row, bytes;
  if (nf_size_mul(n + 2, sizeof(double), &row) || nf_size_mul(steps, row, &bytes)) return SIZE_MAX;
  return bytes;
}

/* Makes room for at least `want` steps on the tape (up to twice as many, within
   the memory limit); NF_ENOMEM with the cause at t if the limit or the
   allocator refuses. A row holds ncap states, so the tape serves every size. */
static nf_status tape_reserve(rk_backend *be, nf_problem *p, double t, size_t want)
{
  char what[96], cause[320];
  if (want <= be->cap) return NF_OK;
  size_t cap = want > SIZE_MAX / 2 ? want : 2 * want, limit = nf_ode_memory_limit(&be->opts);
  size_t bytes = tape_bytes(cap, be->ncap);
  if (bytes == SIZE_MAX || bytes > limit) cap = limit / tape_bytes(1, be->ncap);
  if (cap < want) {
    snprintf(what, sizeof what, "the step tape of %zu steps of %zu states", want, be->ncap);
    nf_ode_memory_exceeded(&be->opts, tape_bytes(want, be->ncap), what, cause, sizeof cause);
    return nf_problem_error(p, NF_ENOMEM, t, cause);
  }
  double *tt = realloc(be->tape_t, cap * sizeof *tt);
  if (tt) be->tape_t = tt;
  double *th = realloc(be->tape_h, cap * sizeof *th);
  if (th) be->tape_h = th;
  double *ty = realloc(be->tape_y, cap * be->ncap * sizeof *ty);
  if (ty) be->tape_y = ty;
  if (!tt || !th || !ty) return nf_problem_error(p, NF_ENOMEM, t, "out of memory for the step tape");
  be->cap = cap;
  return NF_OK;
}

/* Appends the accepted step (t, h) from state y (n values) to the tape. */
static nf_status tape_push(rk_backend *be, nf_problem *p, double t, double h, const double *y)
{
  nf_status st = tape_reserve(be, p, t, be->len + 1);
  if (st) return st;
  be->tape_t[be->len] = t;
  be->tape_h[be->len] = h;
  memcpy(be->tape_y + be->len * be->n, y, be->n * sizeof *y);
  be->len++;
  return NF_OK;
}

/* Stages i = first..ns-1 of the step (t, h) from z: Y_i = z + h sum_j a_ij k_j,
   k_i = f(t + c_i h, Y_i) into row i of K. With keep, Y_i stays in row i of Y
   (the reverse pass needs them); else row 0 is reused. Returns the code of
   nf_problem_eval (stopping at the first stage that is not NF_EVAL_OK). */
static int rk_stages(rk_backend *be, nf_problem *p, int first, int ns, double t, double h,
                     const double *z, int keep)
{
  const rk_tableau *tab = be->tab;
  size_t N = be->N, n = p->n;
  for (int i = first; i < ns; i++) {
    double *Yi = be->Y + (keep ? (size_t)i * N : 0);
    memcpy(Yi, z, n * sizeof *z);
    for (int j = 0; j < i; j++) {
      double ha = h * tab->a[i][j];
      const double *Kj = be->K + (size_t)j * N;
      if (ha != 0)
        for (size_t k = 0; k < n; k++) Yi[k] += ha * Kj[k];
    }
    double *Ki = be->K + (size_t)i * N;
    int rc = nf_problem_eval(p, t + tab->c[i] * h, Yi, Ki, p->nq ? Ki + n : NULL);
    if (rc) return rc;
  }
  return NF_EVAL_OK;
}

/* out = base + h sum_{i<ns} w_i k_i over all N components (base NULL: zero). */
static void rk_combine(const rk_backend *be, int ns, const double *w, double h, const double *base,
                       double *out)
{
  size_t N = be->N;
  if (base)
    memcpy(out, base, N * sizeof *out);
  else
    memset(out, 0, N * sizeof *out);
  for (int i = 0; i < ns; i++) {
    double hw = h * w[i];
    const double *Ki = be->K + (size_t)i * N;
    if (hw != 0)
      for (size_t k = 0; k < N; k++) out[k] += hw * Ki[k];
  }
}

/* Weighted RMS norm of the local error over the first m components:
   sqrt(mean (err_i / (atol + rtol max(|y_i|, |ynew_i|)))^2); +inf if not finite. */
static double rk_error_norm(const rk_backend *be, size_t m, const double *y)
{
  double s = 0;
  for (size_t i = 0; i < m; i++) {
    double sc = be->opts.atol + be->opts.rtol * fmax(fabs(y[i]), fabs(be->ynew[i]));
    double r = be->err[i] / sc;
    s += r * r;
  }
  s = sqrt(s / (double)m);
  return isfinite(s) ? s : INFINITY;
}

/* Takes the step (t, h) of the fixed map from z in place (stages of the
   solution only); NF_OK or the failure at t. */
static nf_status rk_fixed_step(rk_backend *be, nf_problem *p, double t, double h, double *z)
{
  const rk_tableau *tab = be->tab;
  int rc = rk_stages(be, p, 0, tab->s_sol, t, h, z, 0);
  if (rc) return nf_problem_eval_error(p, rc, t);
  rk_combine(be, tab->s_sol, tab->b, h, z, be->ynew);
  if (nf_first_nonfinite(be->N, be->ynew) < be->N)
    return nf_problem_error(p, NF_ENONFINITE, t + h, "the state became non-finite");
  memcpy(z, be->ynew, be->N * sizeof *z);
  return NF_OK;
}

/* Integrates over a given step sequence: fixed_steps equal steps, or (replay)
   the recorded steps rescaled from the recorded interval to [t0, t1]. */
static nf_status rk_run_schedule(rk_backend *be, nf_problem *p, double t0, double t1, double *z,
                                 nf_run *run, int replay)
{
  const nf_ode *ode = p->ode;
  size_t steps = replay ? be->len : be->opts.fixed_steps;
  double scale = replay ? (t1 - t0) / (ode->t1 - ode->t0) : 0;
  double H = (t1 - t0) / (double)steps;
  int record = be->record && !replay;
  nf_status st;
  if (record) {
    be->len = 0;
    if ((st = tape_reserve(be, p, t0, steps))) return st;
  }
  for (size_t k = 0; k < steps; k++) {
    double t = replay ? t0 + (be->tape_t[k] - ode->t0) * scale : t0 + (double)k * H;
    double h = replay ? be->tape_h[k] * scale : H;
    run->t_reached = t;
    if (record && (st = tape_push(be, p, t, h, z))) return st;
    st = rk_fixed_step(be, p, t, h, z);
    if (st) return st;
    run->steps++;
  }
  run->t_reached = t1;
  return NF_OK;
}

/* Starting step size (Hairer, Nørsett & Wanner I, II.4): balances an Euler step's
   change of f against the tolerance; uses one extra evaluation (K row 1).
   Returns NF_EVAL_FAILED if a callback failed, else NF_EVAL_OK. */
static int rk_initial_step(rk_backend *be, nf_problem *p, size_t m, double t0, double t1,
                           const double *z, double *habs)
{
  const double *f0 = be->K;
  double *f1 = be->K + be->N, *Y = be->Y;
  double T = fabs(t1 - t0), dir = t1 > t0 ? 1 : -1;
  double d0 = 0, d1 = 0, d2 = 0;
  for (size_t i = 0; i < m; i++) {
    double sc = be->opts.atol + be->opts.rtol * fabs(z[i]);
    d0 += (z[i] / sc) * (z[i] / sc);
    d1 += (f0[i] / sc) * (f0[i] / sc);
  }
  d0 = sqrt(d0 / (double)m);
  d1 = sqrt(d1 / (double)m);
  double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
  h0 = fmin(h0, T);
  for (size_t i = 0; i < p->n; i++) Y[i] = z[i] + dir * h0 * f0[i];
  int rc = nf_problem_eval(p, t0 + dir * h0, Y, f1, p->nq ? f1 + p->n : NULL);
  if (rc == NF_EVAL_FAILED) return rc; /* non-finite: d2 is too, and the fallback size is used */
  for (size_t i = 0; i < m; i++) {
    double sc = be->opts.atol + be->opts.rtol * fabs(z[i]);
    double r = (f1[i] - f0[i]) / sc;
    d2 += r * r;
  }
  d2 = sqrt(d2 / (double)m) / h0;
  double dmax = fmax(d1, d2);
  double h1 = (dmax <= 1e-15 || !isfinite(dmax)) ? fmax(1e-6, h0 * 1e-3)
                                                 : pow(0.01 / dmax, 1.0 / be->tab->order);
  *habs = fmin(fmin(100 * h0, h1), T);
  return 0;
}

/* Step size factor after an accepted step with error e (PI control). */
static double rk_accept_factor(double e, double e_prev, int after_reject)
{
  double fac = e > 0 ? rk_safety * pow(e, -rk_alpha) * pow(e_prev, rk_beta) : rk_facmax;
  return fmin(fmax(fac, rk_facmin), after_reject ? 1.0 : rk_facmax);
}

/* Dormand–Prince 5(4) from t0 to t1 with FSAL and PI step size control. */
static nf_status rk_run_adaptive(rk_backend *be, nf_problem *p, double t0, double t1, double *z,
                                 nf_run *run)
{
  const rk_tableau *tab = be->tab;
  size_t N = be->N, m = p->quad_in_norm ? N : p->n;
  double dir = t1 > t0 ? 1 : -1, t = t0, habs;
  double hmin_scale = 16 * DBL_EPSILON * fmax(fabs(t0), fabs(t1));
  char cause[128];
  run->t_reached = t0;
  if (be->record) be->len = 0;
  int rc = nf_problem_eval(p, t0, z, be->K, p->nq ? be->K + p->n : NULL);
  if (rc) return nf_problem_eval_error(p, rc, t0);
  if (be->opts.h0 > 0)
    habs = fmin(be->opts.h0, fabs(t1 - t0));
  else if (rk_initial_step(be, p, m, t0, t1, z, &habs))
    return nf_problem_callback_error(p, t0);
  double e_prev = 1e-4;
  int after_reject = 0, nonfinite = 0;
  while (t != t1) {
    if (run->steps >= be->opts.max_steps) {
      if (p->nonfinite) return nf_problem_eval_error(p, NF_EVAL_NONFINITE, t);
      snprintf(cause, sizeof cause, "step limit (max_steps = %zu) reached", be->opts.max_steps);
      return nf_problem_error(p, NF_ESOLVER, t, cause);
    }
    int last = fabs(t1 - t) <= 1.01 * habs;
    double h = last ? t1 - t : dir * habs;
    if (fabs(h) < fmax(hmin_scale, 16 * DBL_EPSILON * fabs(t))) {
      if (p->nonfinite) return nf_problem_eval_error(p, NF_EVAL_NONFINITE, t);
      snprintf(cause, sizeof cause, "step size underflow (|h| = %.3g)%s", fabs(h),
               nonfinite ? " after the state became non-finite" : "");
      return nf_problem_error(p, nonfinite ? NF_ENONFINITE : NF_ESOLVER, t, cause);
    }
    rc = rk_stages(be, p, 1, tab->s, t, h, z, 0);
    if (rc == NF_EVAL_FAILED) return nf_problem_callback_error(p, t);
    double e = INFINITY; /* a non-finite stage rejects the step */
    if (rc == NF_EVAL_OK) {
      rk_combine(be, tab->s_sol, tab->b, h, z, be->ynew);
      rk_combine(be, tab->s, tab->e, h, NULL, be->err);
      e = rk_error_norm(be, m, z);
    }
    if (e <= 1 && nf_first_nonfinite(N, be->ynew) == N) {
      nf_status st = be->record ? tape_push(be, p, t, h, z) : NF_OK;
      if (st) return st;
      t = last ? t1 : t + h;
      memcpy(z, be->ynew, N * sizeof *z);
      memcpy(be->K, be->K + (size_t)(tab->s - 1) * N, N * sizeof *z); /* FSAL */
      run->steps++;
      run->t_reached = t;
      habs = fabs(h) * rk_accept_factor(e, e_prev, after_reject);
      e_prev = fmax(e, 1e-4);
      after_reject = nonfinite = p->nonfinite = 0;
    } else {
      run->rejected++;
      nonfinite = !isfinite(e);
      double fac = nonfinite ? rk_facmin : rk_safety * pow(e, -1.0 / tab->order);
      habs = fabs(h) * fmin(fmax(fac, rk_facmin), 1.0);
      after_reject = 1;
    }
  }
  return NF_OK;
}

/* Integrates z from t0 to t1 with the backend's method. */
static nf_status rk_integrate(void *backend, nf_problem *p, double t0, double t1, double *z,
                              nf_run *run)
{
  rk_backend *be = backend;
  if (be->tab->adaptive) return rk_run_adaptive(be, p, t0, t1, z, run);
  return rk_run_schedule(be, p, t0, t1, z, run, 0);
}

nf_status nf_rk_replay(void *backend, nf_problem *p, double t0, double t1, double *z, nf_run *run)
{
  return rk_run_schedule(backend, p, t0, t1, z, run, 1);
}

/* Reverse of one step y_{n+1} = y_n + h sum b_i k_i: recomputes the stages from
   y_n, then with ybar = dL/dy_{n+1} sets ybar <- dL/dy_n, adds dL/dtheta into
   g_theta and returns dL/dt_n (*tbar) and dL/dh_n (*hbar). Returns NF_EVAL_OK or
   what went wrong (nf_problem_eval's codes). */
static int rk_step_vjp(rk_backend *be, nf_problem *p, double t, double h, const double *y,
                       double *g_theta, double *tbar, double *hbar)
{
  const rk_tableau *tab = be->tab;
  size_t n = be->n, N = be->N;
  int ns = tab->s_sol;
  int rc = rk_stages(be, p, 0, ns, t, h, y, 1);
  if (rc) return rc;
  double hb = 0, tb = 0;
  for (int i = 0; i < ns; i++) {
    const double *Ki = be->K + (size_t)i * N;
    double *kb = be->kbar + (size_t)i * n, d = 0;
    for (size_t k = 0; k < n; k++) {
      kb[k] = h * tab->b[i] * be->ybar[k];
      d += be->ybar[k] * Ki[k];
    }
    hb += tab->b[i] * d;
  }
  memcpy(be->acc, be->ybar, n * sizeof *y);
  for (int i = ns - 1; i >= 0; i--) {
    double gt = 0;
    rc = nf_problem_vjp(p, t + tab->c[i] * h, be->Y + (size_t)i * N, be->kbar + (size_t)i * n,
                        be->ysc, p->ode->n_theta ? g_theta : NULL, &gt);
    if (rc) return NF_EVAL_FAILED;
    for (size_t k = 0; k < n; k++) be->acc[k] += be->ysc[k];
    for (int j = 0; j < i; j++) {
      double a = tab->a[i][j], d = 0;
      if (a == 0) continue;
      const double *Kj = be->K + (size_t)j * N;
      double *kb = be->kbar + (size_t)j * n;
      for (size_t k = 0; k < n; k++) {
        kb[k] += h * a * be->ysc[k];
        d += be->ysc[k] * Kj[k];
      }
      hb += a * d;
    }
    hb += tab->c[i] * gt;
    tb += gt;
  }
  memcpy(be->ybar, be->acc, n * sizeof *y);
  *tbar = tb;
  *hbar = hb;
  return 0;
}

/* DISCRETE: backpropagates g_y1 through the recorded steps, last to first. */
static nf_status rk_gradient(void *backend, nf_problem *p, const double *g_y1, double *g_y0,
                             double *g_theta, double *g_t0, double *g_t1, nf_run *run)
{
  rk_backend *be = backend;
  const nf_ode *ode = p->ode;
  double T = ode->t1 - ode->t0, gt0 = 0, gt1 = 0;
  memcpy(be->ybar, g_y1, be->n * sizeof *g_y1);
  for (size_t k = be->len; k-- > 0;) {
    double t = be->tape_t[k], h = be->tape_h[k], tbar, hbar;
    run->t_reached = t + h;
    int rc = rk_step_vjp(be, p, t, h, be->tape_y + k * be->n, g_theta, &tbar, &hbar);
    if (rc) return nf_problem_eval_error(p, rc, t);
    double s = (t - ode->t0) / T, phi = h / T;
    gt0 += tbar * (1 - s) - hbar * phi;
    gt1 += tbar * s + hbar * phi;
    run->steps++;
  }
  run->t_reached = ode->t0;
  memcpy(g_y0, be->ybar, be->n * sizeof *g_y0);
  *g_t0 = gt0;
  *g_t1 = gt1;
  return NF_OK;
}

/* DISCRETE's tape for n states: EULER and RK4 keep fixed_steps rows; DOPRI5's
   grows with the accepted steps (tape_reserve checks it as it grows). */
static size_t rk_record_bytes(size_t n, const nf_ode_opts *o, char *what, size_t len)
{
  snprintf(what, len, "the step tape of %s (fixed_steps = %zu steps of %zu states)",
           nf_ode_method_name(o->method), o->fixed_steps, n);
  return o->method == NF_ODE_DOPRI5 ? 0 : tape_bytes(o->fixed_steps, n);
}

const nf_solver_ops nf_rk_ops = {rk_create,   rk_destroy,  rk_resize,
                                 rk_integrate, rk_gradient, rk_record_bytes};
