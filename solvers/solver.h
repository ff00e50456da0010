/* solvers/solver.h — the internal ops table between nf_ode (ode.c), the
   backends (explicit_rk.c, cvodes.c) and the backsolve adjoint (backsolve.c).

   A backend integrates an nf_problem: n error-controlled states z and nq
   quadratures q (q' = g(t, z): they never feed back into z). The plain solve is
   the user's system with nq = 0; the backsolve adjoint is [y, a] with the
   quadratures [g_theta, g_t]. Explicit Runge–Kutta methods carry z and q as one
   vector [z, q]; CVODES carries q as CVODES quadratures. */
#ifndef NFLOW_SOLVER_H
#define NFLOW_SOLVER_H

#include <stddef.h>
#include "nflow/ode.h"

/* Everything declared here is internal: hidden from the shared library's
   exported symbols (tests that need it link the static library). */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

typedef struct nf_problem nf_problem;

/* The problem a backend integrates, and where its callbacks report. */
struct nf_problem {
  size_t n, nq;     /* states, quadratures */
  int quad_in_norm; /* quadratures take part in the local error test */
  /* Writes dz = z' (length n) unless dz is NULL and dq = q' (length nq) unless dq
     is NULL, at (t, z); reads z[0..n) only. Returns 0 or a callback's code. */
  int (*f)(nf_problem *p, double t, const double *z, double *dz, double *dq);
  /* jv = (dz'/dz) v for implicit methods; NULL: difference quotients. */
  int (*jvp)(nf_problem *p, double t, const double *z, const double *v, double *jv);
  nf_ode *ode;              /* owner: scratch vectors and end points */
  const nf_ode_system *sys; /* the user's callbacks */
  size_t *count;            /* incremented by every callback evaluation */
  const char *who;          /* public function named in error messages */
  double t_from, t_to;      /* interval of the integration, for messages */
  const char *failed;       /* callback that returned nonzero ("rhs", "vjp", "jvp"), or NULL */
  int failed_rc;            /* its return code */
  int nonfinite;            /* an evaluation gave NaN/Inf (DOPRI5 clears it on accepting a
                               step; CVODES keeps it and weighs nonfinite_t at a failure) */
  double nonfinite_t;       /* time of the last such evaluation */
};

/* What nf_problem_eval found. */
enum { NF_EVAL_OK = 0, NF_EVAL_FAILED, NF_EVAL_NONFINITE };

/* What a backend run reports back. */
typedef struct nf_run {
  size_t steps, rejected;
  double t_reached;
} nf_run;

/* Operations of one family of methods. */
typedef struct nf_solver_ops {
  /* A backend for problems of n states and nq quadratures; `record` makes
     integrate keep what gradient needs for systems of n_theta parameters. NULL
     with nf_errmsg set on failure. */
  void *(*create)(size_t n, size_t nq, size_t n_theta, int record, const nf_ode_opts *opts);
  void (*destroy)(void *backend);
  /* Makes the backend integrate problems of n states and nq quadratures (no more
     than it was created with; the caller checks) for systems of n_theta
     parameters; *built = 1 if that needed new memory, else 0. On failure
     (status, message without the caller's name) the backend is unchanged. */
  nf_status (*resize)(void *backend, size_t n, size_t nq, size_t n_theta, int *built);
  /* Integrates z = [states, quadratures] in place from t0 to t1 (t0 != t1). On
     failure returns a status with the message set (z then holds garbage). */
  nf_status (*integrate)(void *backend, nf_problem *p, double t0, double t1, double *z,
                         nf_run *run);
  /* The recorded-mode gradient (DISCRETE or CHECKPOINT) of the last successful
     recording integrate, for p->ode's end points: writes g_y0, g_t0, g_t1 and ADDS
     into g_theta (all non-NULL, internal buffers). */
  nf_status (*gradient)(void *backend, nf_problem *p, const double *g_y1, double *g_y0,
                        double *g_theta, double *g_t0, double *g_t1, nf_run *run);
  /* Bytes a recording integrate of n states would keep, known before any solve
     (SIZE_MAX if the product overflows; 0 if it only grows with the solve and is
     checked as it grows), and in `what` (len bytes) what it is, naming the option. */
  size_t (*record_bytes)(size_t n, const nf_ode_opts *opts, char *what, size_t len);
} nf_solver_ops;

/* The smallest rtol an integrator accepts when the states and derivatives are
   computed with unit roundoff `precision`: 100 x precision (DBL_EPSILON: 2.2e-14). */
double nf_ode_tolerance_floor(double precision);

/* Bytes a solve may keep: opts->max_memory, or (0) the machine's physical memory
   (SIZE_MAX if unknown). */
size_t nf_ode_memory_limit(const nf_ode_opts *opts);

/* 1 if bytes exceed nf_ode_memory_limit(opts), with the cause "<what> would take
   X GB, more than <the limit> (Y GB)" in cause (len bytes); else 0. */
int nf_ode_memory_exceeded(const nf_ode_opts *opts, size_t bytes, const char *what, char *cause,
                           size_t len);

extern const nf_solver_ops nf_rk_ops;     /* EULER, RK4, DOPRI5 (explicit_rk.c) */
extern const nf_solver_ops nf_cvodes_ops; /* ADAMS, BDF (cvodes.c) */

/* The integrator object of nflow/ode.h. */
struct nf_ode {
  size_t n, n_theta;         /* current size (nf_ode_resize) */
  size_t cap_n, cap_theta;   /* the size it was created with: every buffer is this large */
  size_t builds;             /* backend memory made by nf_ode_resize (test hook) */
  nf_ode_opts opts;
  const nf_solver_ops *ops;
  void *fwd;       /* backend of nf_ode_solve (records for DISCRETE and CHECKPOINT) */
  void *bwd;       /* BACKSOLVE: backend of the 2n states [y, a] + n_theta + 1 quadratures */
  /* vectors are allocated at capacity and used at the current size */
  double *y;       /* n: working copy of the state during a solve */
  double *y0, *y1; /* n: end points of the last successful solve */
  double *f;       /* n: scratch for f(t, y) at an end point */
  double *g_y;     /* n: scratch for vjp's g_y when it is not wanted */
  double *g_y0;    /* n: dL/dy0 under construction */
  double *g_theta; /* n_theta: dL/dtheta under construction */
  double *z;       /* BACKSOLVE: [y, a, g_theta, g_t], 2n + n_theta + 1 (at capacity) */
  double t0, t1;   /* interval of the last successful solve */
  int empty;       /* its span was too short to resolve (ode.c's span_is_empty): the identity */
  int solved;      /* a successful solve is recorded */
  nf_ode_stats stats;
};

/* Callback wrappers: count the call in *p->count and, on a nonzero return,
   remember which callback failed in p. Return the callback's code. */
int nf_problem_rhs(nf_problem *p, double t, const double *y, double *dydt);
/* sys->rhs_vjp: dydt and the vjp of cotangent a at one point, counted once. */
int nf_problem_rhs_vjp(nf_problem *p, double t, const double *y, const double *a, double *dydt,
                       double *g_y, double *g_theta, double *g_t);
int nf_problem_vjp(nf_problem *p, double t, const double *y, const double *a, double *g_y,
                   double *g_theta, double *g_t);
int nf_problem_jvp(nf_problem *p, double t, const double *y, const double *v, double *jv);

/* p->f at (t, z), its outputs checked: NF_EVAL_FAILED if a callback returned
   nonzero, NF_EVAL_NONFINITE (recorded in p) if dz or dq holds NaN/Inf, else
   NF_EVAL_OK. Every backend evaluates the problem through it. */
int nf_problem_eval(nf_problem *p, double t, const double *z, double *dz, double *dq);

/* Records in p a NaN/Inf among the m values of an evaluation at t; 1 if there is one, else 0. */
int nf_problem_check(nf_problem *p, double t, size_t m, const double *out);

/* The failure of an evaluation (code of nf_problem_eval, not NF_EVAL_OK) at t:
   the callback's error, or NF_ENONFINITE "the right-hand side became non-finite
   at t = ...". */
nf_status nf_problem_eval_error(const nf_problem *p, int code, double t);

/* *out = a . f(t, y) (the derivative of a . y(t) along the flow); 0 or the rhs code. */
int nf_problem_dot_f(nf_problem *p, double t, const double *y, const double *a, double *out);

/* The failure "who: cause at t = ... (integrating from ... to ...)" as a status. */
nf_status nf_problem_error(const nf_problem *p, nf_status status, double t, const char *cause);

/* The failure of a callback recorded in p, at time t. */
nf_status nf_problem_callback_error(const nf_problem *p, double t);

/* BACKSOLVE: dL/dy0, dL/dtheta (ADDED), dL/dt0, dL/dt1 by integrating the
   augmented adjoint system backwards from t1 (backsolve.c). */
nf_status nf_backsolve_gradient(nf_problem *p, const double *g_y1, double *g_y0, double *g_theta,
                                double *g_t0, double *g_t1, nf_run *run);

/* DISCRETE, explicit Runge–Kutta: integrates z with the step sizes recorded by
   the last recording solve, rescaled to [t0, t1] (fractions of t1 - t0 held
   fixed), without recording: the discrete map whose exact derivative the
   DISCRETE gradient is (explicit_rk.c). */
nf_status nf_rk_replay(void *backend, nf_problem *p, double t0, double t1, double *z,
                       nf_run *run);

/* Test hook: y <- the discrete map of the last DISCRETE solve of ode (its step
   fractions) from (t0, y) to t1; y untouched on failure. NF_ESTATE unless a
   DISCRETE solve succeeded. */
nf_status nf_ode_replay(nf_ode *ode, const nf_ode_system *sys, double t0, double t1, double *y);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
