/* solvers/cvodes.c — ADAMS and BDF through SUNDIALS CVODES (6.x, with a
   SUNContext), and NF_GRAD_CHECKPOINT through the CVODES adjoint module.

   ADAMS: Adams–Moulton with fixed-point iteration (non-stiff). BDF: Newton
   with matrix-free GMRES (SPGMR, no preconditioner), J v from sys->jvp when
   given, else CVODES's difference quotients. Quadratures of a problem are CVODES
   quadratures, in the error test iff p->quad_in_norm.

   CHECKPOINT (Hindmarsh et al. 2005; CVODES guide, adjoint sensitivity): the
   forward solve stores checkpoints every checkpoint_steps steps (Hermite
   interpolation between them); the gradient integrates from t1 back to t0
     lambda' = -(df/dy)^T lambda,   lambda(t1) = dL/dy(t1),   lambda(t0) = dL/dy0,
     mu'     = -(df/dtheta)^T lambda, mu(t1) = 0,              mu(t0) = dL/dtheta,
   mu as a backward quadrature (in the error test unless opts.seminorm), and
     dL/dt1 = dL/dy(t1) . f(t1, y1),  dL/dt0 = -lambda(t0) . f(t0, y0).

   CVODES memory is tied to the length of its vectors, so a backend keeps one
   per size (a slot): the size it was created for, and the most recent other
   size nf_ode_resize asked for, all in the backend's one SUNContext. A slot's
   memory is made once and re-initialised per solve (CVodeReInit,
   CVodeAdjReInit, CVodeReInitB); its backward problem is set up at its first
   gradient. CVODES reports through an error handler that keeps
   the message for ours: nothing is printed. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cvodes/cvodes.h>
#include <nvector/nvector_serial.h>
#include <sundials/sundials_context.h>
#include <sunlinsol/sunlinsol_spgmr.h>
#include <sunnonlinsol/sunnonlinsol_fixedpoint.h>

#include "internal.h"
#include "solver.h"

/* CVODES memory for one size of problem. */
typedef struct cv_slot {
  size_t n, nq, n_theta;
  N_Vector y, q;         /* states, quadratures (q NULL if nq == 0) */
  void *mem;             /* CVODES memory; NULL: the slot is empty */
  SUNNonlinearSolver nls; /* ADAMS: fixed point */
  SUNLinearSolver ls;     /* BDF: SPGMR under CVODES's default Newton */
  int which, b_ready;    /* backward problem: index, set up */
  N_Vector yB, qB;       /* lambda (n), mu (n_theta; NULL if 0) */
  SUNNonlinearSolver nlsB;
  SUNLinearSolver lsB;
} cv_slot;

typedef struct cv_backend {
  SUNContext ctx;        /* shared by the slots, lives as long as the backend */
  nf_ode_opts opts;
  int record;            /* CHECKPOINT: the adjoint module is on */
  cv_slot full, other;   /* the size created for; the most recent other size */
  cv_slot *cur;          /* the slot of the current size */
  nf_problem *p;         /* problem of the running integrate or gradient */
  char msg[256];         /* last CVODES error message */
} cv_backend;

/* CVODES error handler: keeps the last error message, prints nothing. */
static void cv_error_handler(int code, const char *module, const char *function, char *msg,
                             void *data)
{
  cv_backend *be = data;
  if (code >= 0) return; /* warnings (e.g. t + h == t) are dropped */
  snprintf(be->msg, sizeof be->msg, "%s %s: %s", module ? module : "CVODES",
           function ? function : "", msg ? msg : "");
}

/* Maps an nf_problem_eval code to CVODES: failure stops (-1), a non-finite output
   asks for a smaller step (+1, recoverable), else 0. */
static int cv_code(int eval)
{
  return eval == NF_EVAL_FAILED ? -1 : eval == NF_EVAL_NONFINITE ? 1 : 0;
}

/* cv_code of a callback's result rc with its m outputs at t (checked through the problem). */
static int cv_result(cv_backend *be, int rc, double t, size_t m, const double *out)
{
  if (rc) return -1;
  return cv_code(nf_problem_check(be->p, t, m, out) ? NF_EVAL_NONFINITE : NF_EVAL_OK);
}

/* CVODES rhs: the problem's state derivative. */
static int cv_rhs(realtype t, N_Vector y, N_Vector ydot, void *data)
{
  cv_backend *be = data;
  return cv_code(nf_problem_eval(be->p, t, N_VGetArrayPointer(y), N_VGetArrayPointer(ydot), NULL));
}

/* CVODES quadrature rhs: the problem's quadrature derivative. */
static int cv_rhs_quad(realtype t, N_Vector y, N_Vector qdot, void *data)
{
  cv_backend *be = data;
  return cv_code(nf_problem_eval(be->p, t, N_VGetArrayPointer(y), NULL, N_VGetArrayPointer(qdot)));
}

/* CVODES Jacobian-times-vector: Jv = (df/dy) v from the problem's jvp. */
static int cv_jtimes(N_Vector v, N_Vector Jv, realtype t, N_Vector y, N_Vector fy, void *data,
                     N_Vector tmp)
{
  (void)fy;
  (void)tmp;
  cv_backend *be = data;
  double *out = N_VGetArrayPointer(Jv);
  int rc = be->p->jvp(be->p, t, N_VGetArrayPointer(y), N_VGetArrayPointer(v), out);
  return cv_result(be, rc, t, be->cur->n, out);
}

/* out = -(df/dy)^T v at (t, y): the backward rhs and the backward Jacobian's product. */
static int cv_minus_vjp(cv_backend *be, double t, N_Vector y, N_Vector v, N_Vector out)
{
  double *o = N_VGetArrayPointer(out);
  int rc = nf_problem_vjp(be->p, t, N_VGetArrayPointer(y), N_VGetArrayPointer(v), o, NULL, NULL);
  for (size_t i = 0; i < be->cur->n; i++) o[i] = -o[i];
  return cv_result(be, rc, t, be->cur->n, o);
}

/* Backward rhs: lambda' = -(df/dy)^T lambda. */
static int cv_rhs_b(realtype t, N_Vector y, N_Vector yB, N_Vector yBdot, void *data)
{
  return cv_minus_vjp(data, t, y, yB, yBdot);
}

/* Backward quadrature rhs: mu' = -(df/dtheta)^T lambda. */
static int cv_rhs_quad_b(realtype t, N_Vector y, N_Vector yB, N_Vector qBdot, void *data)
{
  cv_backend *be = data;
  size_t nt = be->cur->n_theta;
  double *out = N_VGetArrayPointer(qBdot);
  memset(out, 0, nt * sizeof *out);
  int rc = nf_problem_vjp(be->p, t, N_VGetArrayPointer(y), N_VGetArrayPointer(yB),
                          be->p->ode->g_y, out, NULL);
  for (size_t k = 0; k < nt; k++) out[k] = -out[k];
  return cv_result(be, rc, t, nt, out);
}

/* Backward Jacobian-times-vector: the backward Jacobian is -(df/dy)^T. */
static int cv_jtimes_b(N_Vector vB, N_Vector JvB, realtype t, N_Vector y, N_Vector yB,
                       N_Vector fyB, void *data, N_Vector tmpB)
{
  (void)yB;
  (void)fyB;
  (void)tmpB;
  return cv_minus_vjp(data, t, y, vB, JvB);
}

/* Frees a slot's memory (CVodeFree also frees the adjoint and backward memory) and empties it. */
static void cv_slot_free(cv_slot *sl)
{
  if (sl->mem) CVodeFree(&sl->mem);
  if (sl->nls) SUNNonlinSolFree(sl->nls);
  if (sl->ls) SUNLinSolFree(sl->ls);
  if (sl->nlsB) SUNNonlinSolFree(sl->nlsB);
  if (sl->lsB) SUNLinSolFree(sl->lsB);
  if (sl->y) N_VDestroy(sl->y);
  if (sl->q) N_VDestroy(sl->q);
  if (sl->yB) N_VDestroy(sl->yB);
  if (sl->qB) N_VDestroy(sl->qB);
  memset(sl, 0, sizeof *sl);
}

/* Frees a backend: its slots, then the context they share. */
static void cv_destroy(void *backend)
{
  cv_backend *be = backend;
  if (!be) return;
  cv_slot_free(&be->full);
  cv_slot_free(&be->other);
  if (be->ctx) SUNContext_Free(&be->ctx);
  free(be);
}

/* opts.max_steps as CVODES's long. */
static long cv_max_steps(const nf_ode_opts *o)
{
  return o->max_steps > (size_t)LONG_MAX ? LONG_MAX : (long)o->max_steps;
}

/* A new serial vector of m zeros (m >= 1) in the backend's context. */
static N_Vector cv_vector(cv_backend *be, size_t m)
{
  N_Vector v = N_VNew_Serial((sunindextype)m, be->ctx);
  if (v) N_VConst(0.0, v);
  return v;
}

/* Makes the CVODES memory of slot sl for its n states and nq quadratures,
   configured once; returns a CVODES flag (-1: out of memory). */
static int cv_slot_build(cv_backend *be, cv_slot *sl)
{
  const nf_ode_opts *o = &be->opts;
  int adams = o->method == NF_ODE_ADAMS;
  be->msg[0] = '\0';
  if (!(sl->y = cv_vector(be, sl->n))) return -1;
  if (sl->nq && !(sl->q = cv_vector(be, sl->nq))) return -1;
  if (!(sl->mem = CVodeCreate(adams ? CV_ADAMS : CV_BDF, be->ctx))) return -1;
  int f = CVodeSetErrHandlerFn(sl->mem, cv_error_handler, be);
  f = f ? f : CVodeInit(sl->mem, cv_rhs, 0.0, sl->y);
  f = f ? f : CVodeSetUserData(sl->mem, be);
  f = f ? f : CVodeSStolerances(sl->mem, o->rtol, o->atol);
  f = f ? f : CVodeSetMaxNumSteps(sl->mem, cv_max_steps(o));
  if (f) return f;
  if (adams) {
    if (!(sl->nls = SUNNonlinSol_FixedPoint(sl->y, 0, be->ctx))) return -1;
    f = CVodeSetNonlinearSolver(sl->mem, sl->nls);
  } else {
    if (!(sl->ls = SUNLinSol_SPGMR(sl->y, SUN_PREC_NONE, 0, be->ctx))) return -1;
    f = CVodeSetLinearSolver(sl->mem, sl->ls, NULL);
  }
  if (!f && sl->nq) {
    f = CVodeQuadInit(sl->mem, cv_rhs_quad, sl->q);
    f = f ? f : CVodeQuadSStolerances(sl->mem, o->rtol, o->atol);
  }
  if (!f && be->record) {
    long steps = o->checkpoint_steps > (size_t)LONG_MAX ? LONG_MAX : (long)o->checkpoint_steps;
    f = CVodeAdjInit(sl->mem, steps, CV_HERMITE);
    if (!f && !(sl->yB = cv_vector(be, sl->n))) return -1;
    if (!f && sl->n_theta && !(sl->qB = cv_vector(be, sl->n_theta))) return -1;
  }
  return f;
}

/* Fills slot sl for n states, nq quadratures and n_theta parameters; on failure
   frees what was made and returns the status with the message (no caller's name). */
static nf_status cv_slot_make(cv_backend *be, cv_slot *sl, size_t n, size_t nq, size_t n_theta)
{
  memset(sl, 0, sizeof *sl);
  sl->n = n;
  sl->nq = nq;
  sl->n_theta = n_theta;
  int f = cv_slot_build(be, sl);
  if (!f) return NF_OK;
  cv_slot_free(sl);
  return nf_fail(NF_ENOMEM, "setting up CVODES for %zu states failed (flag %d) %s", n, f, be->msg);
}

/* A CVODES backend for n states and nq quadratures (record: CHECKPOINT). */
static void *cv_create(size_t n, size_t nq, size_t n_theta, int record, const nf_ode_opts *opts)
{
  cv_backend *be = calloc(1, sizeof *be);
  if (!be) {
    nf_fail(NF_ENOMEM, "out of memory");
    return NULL;
  }
  be->opts = *opts;
  be->record = record;
  be->cur = &be->full;
  if (SUNContext_Create(NULL, &be->ctx)) {
    nf_fail(NF_ENOMEM, "creating the SUNDIALS context failed");
    cv_destroy(be);
    return NULL;
  }
  if (cv_slot_make(be, &be->full, n, nq, n_theta)) {
    cv_destroy(be);
    return NULL;
  }
  return be;
}

/* Whether slot sl holds memory for n states, nq quadratures and n_theta parameters. */
static int cv_slot_fits(const cv_slot *sl, size_t n, size_t nq, size_t n_theta)
{
  return sl->mem && sl->n == n && sl->nq == nq && sl->n_theta == n_theta;
}

/* Switches to the slot of the size (n, nq, n_theta): the full one, the other one,
   or else a new other one replacing the old (kept if making the new one fails). */
static nf_status cv_resize(void *backend, size_t n, size_t nq, size_t n_theta, int *built)
{
  cv_backend *be = backend;
  *built = 0;
  if (cv_slot_fits(&be->full, n, nq, n_theta)) {
    be->cur = &be->full;
    return NF_OK;
  }
  if (!cv_slot_fits(&be->other, n, nq, n_theta)) {
    cv_slot sl;
    nf_status st = cv_slot_make(be, &sl, n, nq, n_theta);
    if (st) return st;
    cv_slot_free(&be->other);
    be->other = sl;
    *built = 1;
  }
  be->cur = &be->other;
  return NF_OK;
}

/* The failure of a CVODES call (flag < 0) at time t, after steps of size h, as a
   status with a clear cause. A non-finite evaluation within 16 |h| (and a few
   ulps) of t caused it: CVODES answers a NaN wall with ever smaller steps, down
   to steps that no longer move t, until the step limit. */
static nf_status cv_failure(const cv_backend *be, const nf_problem *p, int flag, double t,
                            double h)
{
  char cause[512];
  const char *what;
  nf_status status = NF_ESOLVER;
  if (p->failed) return nf_problem_callback_error(p, t);
  if (p->nonfinite &&
      !(fabs(p->nonfinite_t - t) > 16 * fabs(h) + 16 * DBL_EPSILON * fmax(1, fabs(t))))
    return nf_problem_eval_error(p, NF_EVAL_NONFINITE, t);
  switch (flag) {
  case CV_TOO_MUCH_WORK:
    snprintf(cause, sizeof cause, "step limit (max_steps = %zu) reached", be->opts.max_steps);
    return nf_problem_error(p, NF_ESOLVER, t, cause);
  case CV_TOO_MUCH_ACC: what = "tolerances too small for the machine precision"; break;
  case CV_ERR_FAILURE:
    what = "local error test failed repeatedly or the step size underflowed";
    break;
  case CV_CONV_FAILURE:
    what = "nonlinear solver failed to converge repeatedly (stiff problem for adams?)";
    break;
  case CV_LSETUP_FAIL:
  case CV_LSOLVE_FAIL: what = "the linear solver failed"; break;
  case CV_RHSFUNC_FAIL:
  case CV_FIRST_RHSFUNC_ERR:
  case CV_REPTD_RHSFUNC_ERR:
  case CV_UNREC_RHSFUNC_ERR:
  case CV_QRHSFUNC_FAIL:
  case CV_FIRST_QRHSFUNC_ERR:
  case CV_REPTD_QRHSFUNC_ERR:
  case CV_UNREC_QRHSFUNC_ERR:
    what = "the right-hand side failed";
    break;
  case CV_MEM_FAIL: what = "out of memory"; status = NF_ENOMEM; break;
  default: what = "CVODES failed"; break;
  }
  snprintf(cause, sizeof cause, "%s (CVODES flag %d%s%s)", what, flag, be->msg[0] ? ": " : "",
           be->msg);
  return nf_problem_error(p, status, t, cause);
}

/* Per-solve settings: initial step (signed as t1 - t0), stop time, J v. */
static int cv_prepare(cv_backend *be, nf_problem *p, double t0, double t1)
{
  cv_slot *sl = be->cur;
  double h0 = be->opts.h0 > 0 ? copysign(be->opts.h0, t1 - t0) : 0.0;
  int f = CVodeSetInitStep(sl->mem, h0);
  f = f ? f : CVodeSetStopTime(sl->mem, t1);
  if (!f && sl->nq) f = CVodeSetQuadErrCon(sl->mem, p->quad_in_norm ? SUNTRUE : SUNFALSE);
  if (!f && sl->ls) f = CVodeSetJacTimes(sl->mem, NULL, p->jvp ? cv_jtimes : NULL);
  return f;
}

/* Integrates z = [states, quadratures] from t0 to t1 (CVodeF when recording). */
static nf_status cv_integrate(void *backend, nf_problem *p, double t0, double t1, double *z,
                              nf_run *run)
{
  cv_backend *be = backend;
  cv_slot *sl = be->cur;
  double *y = N_VGetArrayPointer(sl->y), tret = t0;
  be->p = p;
  be->msg[0] = '\0';
  memcpy(y, z, sl->n * sizeof *z);
  int f = CVodeReInit(sl->mem, t0, sl->y);
  if (!f && sl->nq) {
    memcpy(N_VGetArrayPointer(sl->q), z + sl->n, sl->nq * sizeof *z);
    f = CVodeQuadReInit(sl->mem, sl->q);
  }
  if (!f && be->record) f = CVodeAdjReInit(sl->mem);
  f = f ? f : cv_prepare(be, p, t0, t1);
  if (!f) {
    int ncheck;
    f = be->record ? CVodeF(sl->mem, t1, sl->y, &tret, CV_NORMAL, &ncheck)
                   : CVode(sl->mem, t1, sl->y, &tret, CV_NORMAL);
  }
  long steps = 0, netf = 0, nncf = 0;
  CVodeGetNumSteps(sl->mem, &steps);
  CVodeGetNumErrTestFails(sl->mem, &netf);
  CVodeGetNumStepSolveFails(sl->mem, &nncf);
  run->steps = (size_t)steps;
  run->rejected = (size_t)(netf + nncf);
  if (f < 0) {
    double h = INFINITY;
    CVodeGetCurrentTime(sl->mem, &tret);
    CVodeGetCurrentStep(sl->mem, &h);
    run->t_reached = tret;
    return cv_failure(be, p, f, tret, h);
  }
  memcpy(z, y, sl->n * sizeof *z);
  if (sl->nq) {
    CVodeGetQuad(sl->mem, &tret, sl->q);
    memcpy(z + sl->n, N_VGetArrayPointer(sl->q), sl->nq * sizeof *z);
  }
  run->t_reached = t1;
  return NF_OK;
}

/* Creates the backward problem (first gradient) or re-initialises it at (t1, yB, qB). */
static int cv_backward_init(cv_backend *be, double t1)
{
  cv_slot *sl = be->cur;
  const nf_ode_opts *o = &be->opts;
  if (sl->b_ready) {
    int f = CVodeReInitB(sl->mem, sl->which, t1, sl->yB);
    if (!f && sl->qB) f = CVodeQuadReInitB(sl->mem, sl->which, sl->qB);
    return f;
  }
  int adams = o->method == NF_ODE_ADAMS;
  int f = CVodeCreateB(sl->mem, adams ? CV_ADAMS : CV_BDF, &sl->which);
  if (f) return f;
  void *bmem = CVodeGetAdjCVodeBmem(sl->mem, sl->which);
  f = bmem ? CVodeSetErrHandlerFn(bmem, cv_error_handler, be) : -1;
  f = f ? f : CVodeInitB(sl->mem, sl->which, cv_rhs_b, t1, sl->yB);
  f = f ? f : CVodeSetUserDataB(sl->mem, sl->which, be);
  f = f ? f : CVodeSStolerancesB(sl->mem, sl->which, o->rtol, o->atol);
  f = f ? f : CVodeSetMaxNumStepsB(sl->mem, sl->which, cv_max_steps(o));
  if (f) return f;
  if (adams) {
    if (!(sl->nlsB = SUNNonlinSol_FixedPoint(sl->yB, 0, be->ctx))) return CV_MEM_FAIL;
    f = CVodeSetNonlinearSolverB(sl->mem, sl->which, sl->nlsB);
  } else {
    if (!(sl->lsB = SUNLinSol_SPGMR(sl->yB, SUN_PREC_NONE, 0, be->ctx))) return CV_MEM_FAIL;
    f = CVodeSetLinearSolverB(sl->mem, sl->which, sl->lsB, NULL);
    f = f ? f : CVodeSetJacTimesB(sl->mem, sl->which, NULL, cv_jtimes_b);
  }
  if (!f && sl->qB) {
    f = CVodeQuadInitB(sl->mem, sl->which, cv_rhs_quad_b, sl->qB);
    f = f ? f : CVodeQuadSStolerancesB(sl->mem, sl->which, o->rtol, o->atol);
    f = f ? f : CVodeSetQuadErrConB(sl->mem, sl->which, o->seminorm ? SUNFALSE : SUNTRUE);
  }
  if (!f) sl->b_ready = 1;
  return f;
}

/* CHECKPOINT: solves the backward problem from t1 to t0 over the recorded checkpoints. */
static nf_status cv_gradient(void *backend, nf_problem *p, const double *g_y1, double *g_y0,
                             double *g_theta, double *g_t0, double *g_t1, nf_run *run)
{
  cv_backend *be = backend;
  cv_slot *sl = be->cur;
  const nf_ode *ode = p->ode;
  double t0 = ode->t0, t1 = ode->t1, tret = t1, d1, d0;
  be->p = p;
  be->msg[0] = '\0';
  run->t_reached = t1;
  if (nf_problem_dot_f(p, t1, ode->y1, g_y1, &d1)) return nf_problem_callback_error(p, t1);
  memcpy(N_VGetArrayPointer(sl->yB), g_y1, sl->n * sizeof *g_y1);
  if (sl->qB) N_VConst(0.0, sl->qB);
  int f = cv_backward_init(be, t1);
  f = f ? f : CVodeB(sl->mem, t0, CV_NORMAL);
  void *bmem = sl->b_ready ? CVodeGetAdjCVodeBmem(sl->mem, sl->which) : NULL;
  if (bmem) {
    long steps = 0, netf = 0, nncf = 0;
    CVodeGetNumSteps(bmem, &steps);
    CVodeGetNumErrTestFails(bmem, &netf);
    CVodeGetNumStepSolveFails(bmem, &nncf);
    run->steps = (size_t)steps;
    run->rejected = (size_t)(netf + nncf);
  }
  if (f < 0) {
    double h = INFINITY;
    if (bmem) CVodeGetCurrentTime(bmem, &tret);
    if (bmem) CVodeGetCurrentStep(bmem, &h);
    run->t_reached = tret;
    return cv_failure(be, p, f, tret, h);
  }
  f = CVodeGetB(sl->mem, sl->which, &tret, sl->yB);
  if (!f && sl->qB) f = CVodeGetQuadB(sl->mem, sl->which, &tret, sl->qB);
  if (f < 0) return cv_failure(be, p, f, tret, INFINITY);
  run->t_reached = t0;
  const double *lambda = N_VGetArrayPointer(sl->yB);
  if (nf_problem_dot_f(p, t0, ode->y0, lambda, &d0)) return nf_problem_callback_error(p, t0);
  memcpy(g_y0, lambda, sl->n * sizeof *g_y0);
  if (sl->qB) {
    const double *mu = N_VGetArrayPointer(sl->qB);
    for (size_t k = 0; k < sl->n_theta; k++) g_theta[k] += mu[k];
  }
  *g_t0 = -d0;
  *g_t1 = d1;
  return NF_OK;
}

/* CHECKPOINT's interpolation store for n states: CVodeAdjInit sets up
   checkpoint_steps + 1 Hermite data points of 2 n doubles each (with some
   bookkeeping, counted as 128 bytes). The checkpoints themselves grow with
   the solve inside CVODES and are not estimated. */
static size_t cv_record_bytes(size_t n, const nf_ode_opts *o, char *what, size_t len)
{
  size_t points = o->checkpoint_steps > (size_t)LONG_MAX ? (size_t)LONG_MAX : o->checkpoint_steps;
  size_t bytes;
  snprintf(what, len, "the CVODES interpolation store (checkpoint_steps = %zu steps of %zu states)",
           o->checkpoint_steps, n);
  if (nf_size_mul(points + 1, 2 * n * sizeof(double) + 128, &bytes)) return SIZE_MAX;
  return bytes;
}

const nf_solver_ops nf_cvodes_ops = {cv_create,   cv_destroy,  cv_resize,
                                     cv_integrate, cv_gradient, cv_record_bytes};
