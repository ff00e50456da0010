/* solvers/backsolve.c — NF_GRAD_BACKSOLVE: the adjoint method of Chen et al.
   2018 (Neural ODEs), O(1) memory in time.

   From t1 back to t0 one integrates, with the method and tolerances of the
   solve, the augmented system
     y'       = f(t, y)                   (y reconstructed backwards from y(t1))
     a'       = -a^T df/dy                (a(t1) = dL/dy(t1), a(t0) = dL/dy0)
     g_theta' = -a^T df/dtheta            (g_theta(t1) = 0, g_theta(t0) = dL/dtheta)
     g_t'     = -a^T df/dt                (g_t(t1) = -a(t1) . f(t1, y1), g_t(t0) = dL/dt0)
   since q(t) = -a(t) . f(t, y(t)) obeys q' = -a^T df/dt along the flow, and
   dL/dt1 = a(t1) . f(t1, y1). [y, a] are the states of the problem, [g_theta,
   g_t] its quadratures: they never feed back, so with opts.seminorm they are
   left out of the local error test (Kidger, Chen & Lyons 2021, "Hey, that's
   not an ODE"), which saves steps without changing what the states converge to. */
#include <string.h>

#include "internal.h"
#include "solver.h"

/* Derivatives of the augmented adjoint system at (t, [y, a]): dz = [f, -a^T f_y],
   dq = [-a^T f_theta, -a^T f_t]; one rhs and one vjp evaluation when both are wanted. */
static int augmented_f(nf_problem *p, double t, const double *z, double *dz, double *dq)
{
  nf_ode *ode = p->ode;
  size_t n = ode->n, nt = ode->n_theta;
  const double *y = z, *a = z + n;
  int rc;
  if (dq) memset(dq, 0, (nt + 1) * sizeof *dq);
  double *g_y = dz ? dz + n : ode->g_y, *g_theta = dq && nt ? dq : NULL, *g_t = dq ? dq + nt : NULL;
  if (dz && p->sys->rhs_vjp) {
    rc = nf_problem_rhs_vjp(p, t, y, a, dz, g_y, g_theta, g_t);
  } else {
    rc = dz ? nf_problem_rhs(p, t, y, dz) : 0;
    if (!rc) rc = nf_problem_vjp(p, t, y, a, g_y, g_theta, g_t);
  }
  if (rc) return rc;
  if (dz)
    for (size_t i = 0; i < n; i++) g_y[i] = -g_y[i];
  if (dq)
    for (size_t k = 0; k <= nt; k++) dq[k] = -dq[k];
  return 0;
}

nf_status nf_backsolve_gradient(nf_problem *p, const double *g_y1, double *g_y0, double *g_theta,
                                double *g_t0, double *g_t1, nf_run *run)
{
  nf_ode *ode = p->ode;
  size_t n = ode->n, nt = ode->n_theta;
  double *z = ode->z, d;
  if (nf_problem_dot_f(p, ode->t1, ode->y1, g_y1, &d))
    return nf_problem_callback_error(p, ode->t1);
  memcpy(z, ode->y1, n * sizeof *z);
  memcpy(z + n, g_y1, n * sizeof *z);
  memset(z + 2 * n, 0, nt * sizeof *z);
  z[2 * n + nt] = -d;
  nf_problem aug = *p;
  aug.n = 2 * n;
  aug.nq = nt + 1;
  aug.quad_in_norm = !ode->opts.seminorm;
  aug.f = augmented_f;
  aug.jvp = NULL;
  aug.who = "nf_ode_gradient (backsolve)";
  nf_status st = ode->ops->integrate(ode->bwd, &aug, ode->t1, ode->t0, z, run);
  if (st) return st;
  memcpy(g_y0, z + n, n * sizeof *z);
  for (size_t k = 0; k < nt; k++) g_theta[k] += z[2 * n + k];
  *g_t0 = z[2 * n + nt];
  *g_t1 = d;
  return NF_OK;
}
