/* nflow/ode.h — one integrator interface over several backends, and the
   gradient of an ODE solution with respect to its initial state, parameters
   and end points (the adjoint drivers).

   The system is dy/dt = f(t, y; theta) with y of length n (a whole batch is
   one system). Like GSL's odeiv2 driver, an nf_ode is made once for a size (its
   capacity) and a method and then used for many solves, of that size or, after
   nf_ode_resize, of a smaller one (an epoch's short last batch); it also holds what a solve records
   for the gradient that follows it (the trajectory's end point, CVODES
   checkpoints, or the accepted steps of an explicit Runge–Kutta method). */
#ifndef NFLOW_ODE_H
#define NFLOW_ODE_H

#include <stddef.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_ode_method {
  NF_ODE_EULER = 0, /* fixed step, order 1 */
  NF_ODE_RK4,       /* fixed step, classical Runge–Kutta, order 4 */
  NF_ODE_DOPRI5,    /* Dormand–Prince 5(4), FSAL, PI step-size control */
  NF_ODE_ADAMS,     /* SUNDIALS CVODES, Adams–Moulton with fixed-point iteration (non-stiff) */
  NF_ODE_BDF        /* SUNDIALS CVODES, BDF with Newton and matrix-free GMRES (stiff) */
} nf_ode_method;

typedef enum nf_ode_grad {
  NF_GRAD_NONE = 0,   /* solve only; nf_ode_gradient refuses */
  NF_GRAD_BACKSOLVE,  /* adjoint ODE integrated backwards from y(t1), reconstructing y
                         (Chen et al. 2018); O(1) memory in time; any method */
  NF_GRAD_CHECKPOINT, /* CVODES adjoint module: checkpointed forward trajectory,
                         backward problem with quadratures for the parameters; ADAMS or BDF */
  NF_GRAD_DISCRETE    /* reverse-mode through the accepted steps of EULER, RK4 or DOPRI5:
                         the exact gradient of the discrete map, step sizes held fixed as
                         fractions of t1 - t0 (for DOPRI5: the accepted step sequence of the
                         solve, frozen; the step size controller is not differentiated) */
} nf_ode_grad;

/* The right-hand side and its derivatives. Each callback returns 0 on success
   and nonzero to stop the solve (reported as NF_ESOLVER). */
typedef struct nf_ode_system {
  /* dydt = f(t, y) */
  int (*rhs)(double t, const double *y, double *dydt, void *user);
  /* Vector-Jacobian products at (t, y) with a cotangent a (length n):
     writes g_y = a^T df/dy (length n), ADDS a^T df/dtheta into g_theta
     (length n_theta; NULL: not wanted) and writes a^T df/dt into *g_t
     (NULL: not wanted). Needed by nf_ode_gradient. */
  int (*vjp)(double t, const double *y, const double *a, double *g_y, double *g_theta,
             double *g_t, void *user);
  /* Optional Jacobian-vector product Jv = (df/dy) v for the BDF Krylov solver;
     NULL: CVODES's difference quotients. */
  int (*jvp)(double t, const double *y, const double *v, double *jv, void *user);
  void *user;
  /* Optional rhs and vjp at the same (t, y) in one call, for the backsolve
     adjoint, whose every evaluation needs both (a network computes f on its way
     to the vjp); counted as one evaluation. NULL: rhs, then vjp. */
  int (*rhs_vjp)(double t, const double *y, const double *a, double *dydt, double *g_y,
                 double *g_theta, double *g_t, void *user);
} nf_ode_system;

typedef struct nf_ode_opts {
  nf_ode_method method;
  nf_ode_grad grad;        /* what nf_ode_solve records for */
  double rtol, atol;       /* adaptive methods: local error tolerances, checked for every
                              method (fixed-step methods ignore them): rtol finite and
                              >= 100 DBL_EPSILON (about 2.2e-14; double arithmetic cannot
                              meet less), atol finite and >= DBL_MIN (> 0, not subnormal) */
  double h0;               /* adaptive methods: size of the first step, finite and >= 0 (its
                              sign follows t1 - t0); 0 = chosen by the method */
  size_t max_steps;        /* adaptive methods: accepted steps per integration (the solve,
                              and the backward integration of a gradient), >= 1 */
  size_t fixed_steps;      /* EULER and RK4: steps per integration (BACKSOLVE's backward
                              one too), >= 1 */
  int seminorm;            /* BACKSOLVE and CHECKPOINT: leave the parameter and time adjoints
                              (pure quadratures) out of the local error test of the backward
                              integration (Kidger et al. 2021) */
  size_t checkpoint_steps; /* CHECKPOINT: steps between CVODES checkpoints, >= 1 */
  size_t max_memory;       /* bytes the record of a solve (DISCRETE's step tape, CHECKPOINT's
                              interpolation store) may take; 0 = the machine's physical
                              memory. nf_ode_new refuses (NF_ENOMEM) a record whose size is
                              known in advance (EULER and RK4: fixed_steps rows of n + 2
                              doubles; CHECKPOINT: checkpoint_steps + 1 points of 2 n
                              doubles) and is over the limit; DOPRI5's tape, which grows
                              with the accepted steps, fails the solve (NF_ENOMEM) when it
                              would pass it. Not saved with a model. */
} nf_ode_opts;

/* Counters of the last solve and the last gradient. */
typedef struct nf_ode_stats {
  size_t nfe;         /* right-hand side evaluations of the last nf_ode_solve (including
                         CVODES's difference quotients; jvp calls are not counted) */
  size_t steps;       /* accepted steps */
  size_t rejected;    /* rejected steps (error test or convergence failures) */
  size_t nfe_adjoint; /* rhs + vjp evaluations of the last nf_ode_gradient */
  size_t steps_adjoint; /* steps of its backward integration (DISCRETE: steps reversed) */
  double t_reached;   /* time the last solve or gradient reached (on failure: where it stopped) */
} nf_ode_stats;

typedef struct nf_ode nf_ode;

/* Defaults of a method: rtol = atol = 1e-6, automatic h0, 10^5 steps, 100 fixed
   steps, grad NONE, seminorm on, 100 steps between checkpoints, max_memory 0
   (physical memory). */
nf_ode_opts nf_ode_defaults(nf_ode_method method);

/* Parses "euler", "rk4", "dopri5", "adams", "bdf" and "none", "backsolve", "checkpoint",
   "discrete"; NF_EINVAL (output untouched) for anything else. */
nf_status nf_ode_method_parse(const char *name, nf_ode_method *method);
nf_status nf_ode_grad_parse(const char *name, nf_ode_grad *grad);

/* The names the parsers read ("?" for another value). */
const char *nf_ode_method_name(nf_ode_method method);
const char *nf_ode_grad_name(nf_ode_grad grad);

/* An integrator for systems of n states and n_theta parameters. NULL (with
   nf_errmsg naming the option, its value and its bound) on n == 0, bad
   tolerances, h0, max_steps, fixed_steps or checkpoint_steps, or a gradient
   mode the method cannot give (CHECKPOINT needs ADAMS or BDF; DISCRETE needs
   EULER, RK4 or DOPRI5): NF_EINVAL; on a record over max_memory (see there,
   nothing is allocated) or no memory: NF_ENOMEM. */
nf_ode *nf_ode_new(size_t n, size_t n_theta, const nf_ode_opts *opts);
void nf_ode_free(nf_ode *ode);

/* Makes the integrator solve systems of n states and n_theta parameters, with
   1 <= n <= the n it was created with (its capacity) and n_theta <= the n_theta
   it was created with; NF_EINVAL otherwise, naming both sizes and the capacity.
   Results are bit-identical to those of an nf_ode_new of that size. Allocates
   nothing for EULER, RK4 and DOPRI5. For ADAMS and BDF the SUNContext lives as
   long as the ode, and CVODES memory for the full size and for the most recent
   other size is kept, so alternating between two sizes (full batches and an
   epoch's short last batch) builds nothing after the first time; NF_ENOMEM if
   new CVODES memory cannot be made (the ode is then at its full size). Every
   call, even a refused one, ends the recording of the previous solve
   (nf_ode_gradient then returns NF_ESTATE until the next solve). */
nf_status nf_ode_resize(nf_ode *ode, size_t n, size_t n_theta);

/* Current number of states n (nf_ode_new or the last nf_ode_resize); 0 for NULL. */
size_t nf_ode_size(const nf_ode *ode);

/* The number of states it was created with, the largest n nf_ode_resize accepts; 0 for NULL. */
size_t nf_ode_capacity(const nf_ode *ode);

/* Integrates y in place from t0 to t1 (t1 < t0 integrates backwards) and
   records what the gradient mode needs. A span too short for double arithmetic
   to resolve, |t1 - t0| <= 4 DBL_EPSILON max(|t0|, |t1|) or subnormal (t1 == t0
   included), is a zero-length solve in every method and gradient mode: y is
   unchanged, and the gradient is that of the identity (g_y0 = g_y1, g_theta
   unchanged, dL/dt1 = -dL/dt0 = g_y1 . f(t1, y)). On failure y is untouched and
   the status names the cause and the time reached: NF_ESOLVER (step limit, step
   size underflow, a callback's failure, convergence), NF_ENONFINITE ("the
   right-hand side became non-finite at t = ..." when f gave NaN/Inf, in every
   method; the state became NaN/Inf; NaN/Inf in y or t0, t1), NF_EINVAL (t1 - t0
   overflows), NF_ENOMEM (DOPRI5's step tape would pass max_memory). Every call
   first ends the recording of the previous solve, so after a failure
   nf_ode_gradient returns NF_ESTATE. stats.t_reached tells where a failure
   stopped (about the start of the step that failed). */
nf_status nf_ode_solve(nf_ode *ode, const nf_ode_system *sys, double t0, double t1, double *y);

/* After a successful nf_ode_solve with the same system: given g_y1 = dL/dy(t1),
   writes g_y0 = dL/dy(t0) (may be NULL), ADDS dL/dtheta into g_theta (may be
   NULL), writes dL/dt0 and dL/dt1 into *g_t0, *g_t1 (each may be NULL). sys needs
   rhs and vjp. BACKSOLVE and CHECKPOINT approximate the derivatives of the exact
   flow (dL/dt1 = g_y1 . f(t1, y1), dL/dt0 = -dL/dy0 . f(t0, y0)); DISCRETE gives
   those of the discrete map. May be called again (other g_y1) after the same
   solve. On failure nothing is written: NF_ESTATE (grad NONE, or no successful
   solve), NF_EINVAL, NF_ENONFINITE (g_y1), NF_ESOLVER (a callback or the
   backward integration failed; the message says which and at what time). */
nf_status nf_ode_gradient(nf_ode *ode, const nf_ode_system *sys, const double *g_y1,
                          double *g_y0, double *g_theta, double *g_t0, double *g_t1);

/* Counters of the last solve and gradient; NULL if ode is NULL. */
const nf_ode_stats *nf_ode_get_stats(const nf_ode *ode);

#ifdef __cplusplus
}
#endif
#endif
