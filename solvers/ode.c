/* solvers/ode.c — nf_ode: options, creation, the checked solve and gradient,
   and the dispatch to the backends (solver.h). */
#define _POSIX_C_SOURCE 200809L /* sysconf */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "solver.h"

static const char *const method_names[] = {"euler", "rk4", "dopri5", "adams", "bdf"};
static const char *const grad_names[] = {"none", "backsolve", "checkpoint", "discrete"};

nf_ode_opts nf_ode_defaults(nf_ode_method method)
{
  nf_ode_opts o;
  memset(&o, 0, sizeof o);
  o.method = method;
  o.grad = NF_GRAD_NONE;
  o.rtol = 1e-6;
  o.atol = 1e-6;
  o.h0 = 0.0;
  o.max_steps = 100000;
  o.fixed_steps = 100;
  o.seminorm = 1;
  o.checkpoint_steps = 100;
  return o;
}

const char *nf_ode_method_name(nf_ode_method method)
{
  return (unsigned)method < sizeof method_names / sizeof *method_names ? method_names[method] : "?";
}

const char *nf_ode_grad_name(nf_ode_grad grad)
{
  return (unsigned)grad < sizeof grad_names / sizeof *grad_names ? grad_names[grad] : "?";
}

nf_status nf_ode_method_parse(const char *name, nf_ode_method *method)
{
  int i = 0;
  nf_status st = nf_parse_choice("method", name, method_names,
                                 sizeof method_names / sizeof *method_names, method ? &i : NULL);
  if (st == NF_OK) *method = (nf_ode_method)i;
  return st;
}

nf_status nf_ode_grad_parse(const char *name, nf_ode_grad *grad)
{
  int i = 0;
  nf_status st = nf_parse_choice("gradient mode", name, grad_names,
                                 sizeof grad_names / sizeof *grad_names, grad ? &i : NULL);
  if (st == NF_OK) *grad = (nf_ode_grad)i;
  return st;
}

double nf_ode_tolerance_floor(double precision) { return 100 * precision; }

size_t nf_ode_memory_limit(const nf_ode_opts *o)
{
  if (o->max_memory) return o->max_memory;
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  size_t bytes;
  if (pages > 0 && page > 0 && !nf_size_mul((size_t)pages, (size_t)page, &bytes)) return bytes;
#endif
  return SIZE_MAX;
}

int nf_ode_memory_exceeded(const nf_ode_opts *o, size_t bytes, const char *what, char *cause,
                           size_t len)
{
  size_t limit = nf_ode_memory_limit(o);
  if (bytes <= limit) return 0;
  snprintf(cause, len, "%s would take %s%.3g GB, more than %s (%.3g GB)", what,
           bytes == SIZE_MAX ? "at least " : "", (double)bytes / 1e9,
           o->max_memory ? "the limit max_memory" : "the machine's physical memory",
           (double)limit / 1e9);
  return 1;
}

/* NF_OK if opts describe a valid integrator for n states, else NF_EINVAL with the reason. */
static nf_status check_opts(size_t n, size_t n_theta, const nf_ode_opts *o)
{
  const char *fn = "nf_ode_new";
  if (!o) return nf_fail(NF_EINVAL, "%s: opts is NULL", fn);
  if (n == 0) return nf_fail(NF_EINVAL, "%s: n = 0 states", fn);
  if (n > SIZE_MAX / 64 || n_theta > SIZE_MAX / 64)
    return nf_fail(NF_EINVAL, "%s: n = %zu, n_theta = %zu too large", fn, n, n_theta);
  if ((unsigned)o->method > NF_ODE_BDF)
    return nf_fail(NF_EINVAL, "%s: unknown method %d", fn, (int)o->method);
  if ((unsigned)o->grad > NF_GRAD_DISCRETE)
    return nf_fail(NF_EINVAL, "%s: unknown gradient mode %d", fn, (int)o->grad);
  double floor = nf_ode_tolerance_floor(DBL_EPSILON);
  if (!(o->rtol >= floor && isfinite(o->rtol)))
    return nf_fail(NF_EINVAL,
                   "%s: relative tolerance rtol = %g must be finite and >= %.3g (100 x the "
                   "precision of double arithmetic; smaller tolerances cannot be met)",
                   fn, o->rtol, floor);
  if (!(o->atol >= DBL_MIN && isfinite(o->atol)))
    return nf_fail(NF_EINVAL,
                   "%s: absolute tolerance atol = %g must be finite and >= %.3g (> 0 and not "
                   "subnormal)",
                   fn, o->atol, DBL_MIN);
  if (!(o->h0 >= 0 && isfinite(o->h0)))
    return nf_fail(NF_EINVAL,
                   "%s: h0 = %g must be finite and >= 0 (0: automatic; the direction follows "
                   "t1 - t0)",
                   fn, o->h0);
  if (o->max_steps == 0) return nf_fail(NF_EINVAL, "%s: max_steps = 0", fn);
  if (o->fixed_steps == 0) return nf_fail(NF_EINVAL, "%s: fixed_steps = 0", fn);
  int cvodes = o->method == NF_ODE_ADAMS || o->method == NF_ODE_BDF;
  if (o->grad == NF_GRAD_CHECKPOINT && !cvodes)
    return nf_fail(NF_EINVAL, "%s: gradient mode checkpoint needs method adams or bdf, not %s", fn,
                   method_names[o->method]);
  if (o->grad == NF_GRAD_CHECKPOINT && o->checkpoint_steps == 0)
    return nf_fail(NF_EINVAL, "%s: checkpoint_steps = 0", fn);
  if (o->grad == NF_GRAD_DISCRETE && cvodes)
    return nf_fail(NF_EINVAL,
                   "%s: gradient mode discrete needs method euler, rk4 or dopri5, not %s", fn,
                   method_names[o->method]);
  return NF_OK;
}

/* NF_ENOMEM if what a recording solve keeps would, by the backend's estimate
   for n states, exceed the memory limit; else NF_OK. Allocates nothing. */
static nf_status check_record_memory(const nf_solver_ops *ops, size_t n, const nf_ode_opts *o)
{
  char what[160], cause[320];
  if (o->grad != NF_GRAD_DISCRETE && o->grad != NF_GRAD_CHECKPOINT) return NF_OK;
  size_t bytes = ops->record_bytes(n, o, what, sizeof what);
  if (!nf_ode_memory_exceeded(o, bytes, what, cause, sizeof cause)) return NF_OK;
  return nf_fail(NF_ENOMEM, "nf_ode_new: %s", cause);
}

/* The problem a backend integrates for n states and n_theta parameters: the
   plain solve [y] without quadratures, or (backsolve) the augmented adjoint
   [y, a] with the quadratures [g_theta, g_t]. */
static void problem_dims(size_t n, size_t n_theta, int backsolve, size_t *nz, size_t *nq)
{
  *nz = backsolve ? 2 * n : n;
  *nq = backsolve ? n_theta + 1 : 0;
}

/* A backend of ode's method for n states and n_theta parameters (backsolve: the
   augmented adjoint); NULL with the backend's message. */
static void *backend_create(const nf_ode *ode, size_t n, size_t n_theta, int backsolve)
{
  const nf_ode_opts *o = &ode->opts;
  int record = !backsolve && (o->grad == NF_GRAD_DISCRETE || o->grad == NF_GRAD_CHECKPOINT);
  size_t nz, nq;
  problem_dims(n, n_theta, backsolve, &nz, &nq);
  return ode->ops->create(nz, nq, n_theta, record, o);
}

/* Resizes the backend fwd (backsolve = 0) or bwd (1) of ode to n states and n_theta
   parameters, counting any memory it had to make in ode->builds. */
static nf_status backend_resize(nf_ode *ode, size_t n, size_t n_theta, int backsolve)
{
  size_t nz, nq;
  int built = 0;
  problem_dims(n, n_theta, backsolve, &nz, &nq);
  nf_status st = ode->ops->resize(backsolve ? ode->bwd : ode->fwd, nz, nq, n_theta, &built);
  ode->builds += (size_t)built;
  return st;
}

nf_ode *nf_ode_new(size_t n, size_t n_theta, const nf_ode_opts *opts)
{
  if (check_opts(n, n_theta, opts)) return NULL;
  int cvodes = opts->method == NF_ODE_ADAMS || opts->method == NF_ODE_BDF;
  if (check_record_memory(cvodes ? &nf_cvodes_ops : &nf_rk_ops, n, opts)) return NULL;
  nf_ode *ode = calloc(1, sizeof *ode);
  if (!ode) {
    nf_fail(NF_ENOMEM, "nf_ode_new: out of memory");
    return NULL;
  }
  ode->n = ode->cap_n = n;
  ode->n_theta = ode->cap_theta = n_theta;
  ode->opts = *opts;
  int backsolve = opts->grad == NF_GRAD_BACKSOLVE;
  ode->ops = cvodes ? &nf_cvodes_ops : &nf_rk_ops;
  ode->y = nf_dalloc(n);
  ode->y0 = nf_dalloc(n);
  ode->y1 = nf_dalloc(n);
  ode->f = nf_dalloc(n);
  ode->g_y = nf_dalloc(n);
  ode->g_y0 = nf_dalloc(n);
  ode->g_theta = nf_dalloc(n_theta);
  int ok = ode->y && ode->y0 && ode->y1 && ode->f && ode->g_y && ode->g_y0 && ode->g_theta;
  if (ok && backsolve) {
    ode->z = nf_dalloc(2 * n + n_theta + 1);
    ok = ode->z != NULL;
  }
  if (!ok) {
    nf_ode_free(ode);
    nf_fail(NF_ENOMEM, "nf_ode_new: out of memory");
    return NULL;
  }
  ode->fwd = backend_create(ode, n, n_theta, 0);
  if (ode->fwd && backsolve) ode->bwd = backend_create(ode, n, n_theta, 1);
  if (!ode->fwd || (backsolve && !ode->bwd)) {
    nf_ode_free(ode);
    nf_fail_prefixed(NF_ENOMEM, "nf_ode_new");
    return NULL;
  }
  return ode;
}

nf_status nf_ode_resize(nf_ode *ode, size_t n, size_t n_theta)
{
  const char *fn = "nf_ode_resize";
  if (!ode) return nf_fail(NF_EINVAL, "%s: ode is NULL", fn);
  ode->solved = 0; /* even a refused call ends the old recording */
  if (n == 0 || n > ode->cap_n || n_theta > ode->cap_theta)
    return nf_fail(NF_EINVAL,
                   "%s: n = %zu, n_theta = %zu outside the capacity of the integrator "
                   "(1 <= n <= %zu, n_theta <= %zu)",
                   fn, n, n_theta, ode->cap_n, ode->cap_theta);
  int backsolve = ode->bwd != NULL;
  nf_status st = backend_resize(ode, n, n_theta, 0);
  if (!st && backsolve) st = backend_resize(ode, n, n_theta, 1);
  if (st) { /* back to the full size, which every backend keeps: cannot fail */
    st = nf_fail_prefixed(st, fn);
    backend_resize(ode, ode->cap_n, ode->cap_theta, 0);
    if (backsolve) backend_resize(ode, ode->cap_n, ode->cap_theta, 1);
    n = ode->cap_n;
    n_theta = ode->cap_theta;
  }
  ode->n = n;
  ode->n_theta = n_theta;
  return st;
}

size_t nf_ode_size(const nf_ode *ode) { return ode ? ode->n : 0; }

size_t nf_ode_capacity(const nf_ode *ode) { return ode ? ode->cap_n : 0; }

void nf_ode_free(nf_ode *ode)
{
  if (!ode) return;
  if (ode->fwd) ode->ops->destroy(ode->fwd);
  if (ode->bwd) ode->ops->destroy(ode->bwd);
  free(ode->y);
  free(ode->y0);
  free(ode->y1);
  free(ode->f);
  free(ode->g_y);
  free(ode->g_y0);
  free(ode->g_theta);
  free(ode->z);
  free(ode);
}

const nf_ode_stats *nf_ode_get_stats(const nf_ode *ode) { return ode ? &ode->stats : NULL; }

int nf_problem_rhs(nf_problem *p, double t, const double *y, double *dydt)
{
  (*p->count)++;
  int rc = p->sys->rhs(t, y, dydt, p->sys->user);
  if (rc && !p->failed) {
    p->failed = "rhs";
    p->failed_rc = rc;
  }
  return rc;
}

int nf_problem_vjp(nf_problem *p, double t, const double *y, const double *a, double *g_y,
                   double *g_theta, double *g_t)
{
  (*p->count)++;
  int rc = p->sys->vjp(t, y, a, g_y, g_theta, g_t, p->sys->user);
  if (rc && !p->failed) {
    p->failed = "vjp";
    p->failed_rc = rc;
  }
  return rc;
}

int nf_problem_rhs_vjp(nf_problem *p, double t, const double *y, const double *a, double *dydt,
                       double *g_y, double *g_theta, double *g_t)
{
  (*p->count)++;
  int rc = p->sys->rhs_vjp(t, y, a, dydt, g_y, g_theta, g_t, p->sys->user);
  if (rc && !p->failed) {
    p->failed = "rhs_vjp";
    p->failed_rc = rc;
  }
  return rc;
}

int nf_problem_jvp(nf_problem *p, double t, const double *y, const double *v, double *jv)
{
  int rc = p->sys->jvp(t, y, v, jv, p->sys->user);
  if (rc && !p->failed) {
    p->failed = "jvp";
    p->failed_rc = rc;
  }
  return rc;
}

int nf_problem_dot_f(nf_problem *p, double t, const double *y, const double *a, double *out)
{
  nf_ode *ode = p->ode;
  int rc = nf_problem_rhs(p, t, y, ode->f);
  if (rc) return rc;
  double s = 0;
  for (size_t i = 0; i < ode->n; i++) s += a[i] * ode->f[i];
  *out = s;
  return 0;
}

nf_status nf_problem_error(const nf_problem *p, nf_status status, double t, const char *cause)
{
  return nf_fail(status, "%s: %s at t = %.10g (integrating from %.10g to %.10g)", p->who, cause, t,
                 p->t_from, p->t_to);
}

int nf_problem_check(nf_problem *p, double t, size_t m, const double *out)
{
  if (nf_first_nonfinite(m, out) == m) return 0;
  p->nonfinite = 1;
  p->nonfinite_t = t;
  return 1;
}

int nf_problem_eval(nf_problem *p, double t, const double *z, double *dz, double *dq)
{
  if (p->f(p, t, z, dz, dq)) return NF_EVAL_FAILED;
  int bad = dz ? nf_problem_check(p, t, p->n, dz) : 0;
  if (dq && p->nq) bad |= nf_problem_check(p, t, p->nq, dq);
  return bad ? NF_EVAL_NONFINITE : NF_EVAL_OK;
}

nf_status nf_problem_eval_error(const nf_problem *p, int code, double t)
{
  if (code == NF_EVAL_FAILED || !p->nonfinite) return nf_problem_callback_error(p, t);
  return nf_problem_error(p, NF_ENONFINITE, p->nonfinite_t, "the right-hand side became non-finite");
}

nf_status nf_problem_callback_error(const nf_problem *p, double t)
{
  return nf_fail(NF_ESOLVER,
                 "%s: the %s callback returned %d at t = %.10g (integrating from %.10g to %.10g)",
                 p->who, p->failed ? p->failed : "?", p->failed_rc, t, p->t_from, p->t_to);
}

/* z' = f(t, z) of the user's system, as a problem without quadratures. */
static int plain_f(nf_problem *p, double t, const double *z, double *dz, double *dq)
{
  (void)dq;
  return dz ? nf_problem_rhs(p, t, z, dz) : 0;
}

/* Jacobian-vector product of the user's system. */
static int plain_jvp(nf_problem *p, double t, const double *z, const double *v, double *jv)
{
  return nf_problem_jvp(p, t, z, v, jv);
}

/* The user's system as a problem counted in *count and reported as `who`. */
static nf_problem plain_problem(nf_ode *ode, const nf_ode_system *sys, size_t *count,
                                const char *who, double t_from, double t_to)
{
  nf_problem p;
  memset(&p, 0, sizeof p);
  p.n = ode->n;
  p.f = plain_f;
  p.jvp = sys->jvp ? plain_jvp : NULL;
  p.ode = ode;
  p.sys = sys;
  p.count = count;
  p.who = who;
  p.t_from = t_from;
  p.t_to = t_to;
  return p;
}

/* Whether [t0, t1] is too short for double arithmetic to resolve a step in it:
   |t1 - t0| <= 4 DBL_EPSILON max(|t0|, |t1|), or subnormal (0 included). Every
   method and gradient mode treats such a solve as the identity. */
static int span_is_empty(double t0, double t1)
{
  double span = fabs(t1 - t0);
  return span < DBL_MIN || span <= 4 * DBL_EPSILON * fmax(fabs(t0), fabs(t1));
}

/* Checks the arguments shared by solve and replay. */
static nf_status check_solve(const char *fn, const nf_ode *ode, const nf_ode_system *sys,
                             double t0, double t1, const double *y)
{
  if (!ode || !sys || !y) return nf_fail(NF_EINVAL, "%s: NULL argument", fn);
  if (!sys->rhs) return nf_fail(NF_EINVAL, "%s: the system has no rhs", fn);
  if (!isfinite(t0) || !isfinite(t1))
    return nf_fail(NF_ENONFINITE, "%s: t0 = %g, t1 = %g must be finite", fn, t0, t1);
  if (!isfinite(t1 - t0))
    return nf_fail(NF_EINVAL, "%s: the span t1 - t0 (t0 = %g, t1 = %g) overflows a double", fn,
                   t0, t1);
  size_t bad = nf_first_nonfinite(ode->n, y);
  if (bad < ode->n)
    return nf_fail(NF_ENONFINITE, "%s: y0[%zu] = %g is not finite", fn, bad, y[bad]);
  return NF_OK;
}

nf_status nf_ode_solve(nf_ode *ode, const nf_ode_system *sys, double t0, double t1, double *y)
{
  const char *fn = "nf_ode_solve";
  if (ode) ode->solved = 0; /* even a refused call ends the old recording */
  nf_status st = check_solve(fn, ode, sys, t0, t1, y);
  if (st) return st;
  size_t n = ode->n;
  ode->stats.nfe = ode->stats.steps = ode->stats.rejected = 0;
  ode->stats.t_reached = t0;
  memcpy(ode->y0, y, n * sizeof *y);
  memcpy(ode->y, y, n * sizeof *y);
  int empty = span_is_empty(t0, t1);
  if (!empty) {
    nf_problem p = plain_problem(ode, sys, &ode->stats.nfe, fn, t0, t1);
    nf_run run = {0, 0, t0};
    st = ode->ops->integrate(ode->fwd, &p, t0, t1, ode->y, &run);
    ode->stats.steps = run.steps;
    ode->stats.rejected = run.rejected;
    ode->stats.t_reached = run.t_reached;
    if (st) return st;
  }
  ode->stats.t_reached = t1;
  memcpy(ode->y1, ode->y, n * sizeof *y);
  memcpy(y, ode->y, n * sizeof *y);
  ode->t0 = t0;
  ode->t1 = t1;
  ode->empty = empty;
  ode->solved = 1;
  return NF_OK;
}

/* Gradient over an empty interval: the flow map is the identity, y(t1) moves with t1 at f. */
static nf_status gradient_trivial(nf_problem *p, const double *g_y1, double *g_y0, double *g_t0,
                                  double *g_t1)
{
  nf_ode *ode = p->ode;
  double d;
  if (nf_problem_dot_f(p, ode->t1, ode->y1, g_y1, &d)) return nf_problem_callback_error(p, ode->t1);
  memcpy(g_y0, g_y1, ode->n * sizeof *g_y1);
  *g_t1 = d;
  *g_t0 = -d;
  return NF_OK;
}

nf_status nf_ode_gradient(nf_ode *ode, const nf_ode_system *sys, const double *g_y1,
                          double *g_y0, double *g_theta, double *g_t0, double *g_t1)
{
  const char *fn = "nf_ode_gradient";
  if (!ode || !sys || !g_y1) return nf_fail(NF_EINVAL, "%s: NULL argument", fn);
  if (!sys->rhs || !sys->vjp)
    return nf_fail(NF_EINVAL, "%s: the system needs rhs and vjp callbacks", fn);
  if (ode->opts.grad == NF_GRAD_NONE)
    return nf_fail(NF_ESTATE, "%s: the integrator was made with grad = none", fn);
  if (!ode->solved)
    return nf_fail(NF_ESTATE, "%s: no successful nf_ode_solve to differentiate", fn);
  size_t bad = nf_first_nonfinite(ode->n, g_y1);
  if (bad < ode->n)
    return nf_fail(NF_ENONFINITE, "%s: g_y1[%zu] = %g is not finite", fn, bad, g_y1[bad]);
  ode->stats.nfe_adjoint = ode->stats.steps_adjoint = 0;
  memset(ode->g_theta, 0, ode->n_theta * sizeof *ode->g_theta);
  nf_problem p = plain_problem(ode, sys, &ode->stats.nfe_adjoint, fn, ode->t1, ode->t0);
  nf_run run = {0, 0, ode->t1};
  double gt0 = 0, gt1 = 0;
  nf_status st;
  if (ode->empty)
    st = gradient_trivial(&p, g_y1, ode->g_y0, &gt0, &gt1);
  else if (ode->opts.grad == NF_GRAD_BACKSOLVE)
    st = nf_backsolve_gradient(&p, g_y1, ode->g_y0, ode->g_theta, &gt0, &gt1, &run);
  else
    st = ode->ops->gradient(ode->fwd, &p, g_y1, ode->g_y0, ode->g_theta, &gt0, &gt1, &run);
  ode->stats.steps_adjoint = run.steps;
  ode->stats.t_reached = st ? run.t_reached : ode->t0;
  if (st) return st;
  if (g_y0) memcpy(g_y0, ode->g_y0, ode->n * sizeof *g_y0);
  if (g_theta)
    for (size_t k = 0; k < ode->n_theta; k++) g_theta[k] += ode->g_theta[k];
  if (g_t0) *g_t0 = gt0;
  if (g_t1) *g_t1 = gt1;
  return NF_OK;
}

nf_status nf_ode_replay(nf_ode *ode, const nf_ode_system *sys, double t0, double t1, double *y)
{
  const char *fn = "nf_ode_replay";
  nf_status st = check_solve(fn, ode, sys, t0, t1, y);
  if (st) return st;
  if (ode->opts.grad != NF_GRAD_DISCRETE || !ode->solved || ode->empty)
    return nf_fail(NF_ESTATE, "%s: no successful discrete solve to replay", fn);
  memcpy(ode->y, y, ode->n * sizeof *y);
  nf_problem p = plain_problem(ode, sys, &ode->stats.nfe, fn, t0, t1);
  nf_run run = {0, 0, t0};
  st = nf_rk_replay(ode->fwd, &p, t0, t1, ode->y, &run);
  if (st) return st;
  memcpy(y, ode->y, ode->n * sizeof *y);
  return NF_OK;
}
