/* lib/cnf.c — the continuous normalizing flow layer: apply integrates
   d/dt [z, l, r] = [f(t, z), tr(df/dz), s |f|^2, s |df/dz|_F^2] over the batch as
   one ODE system; vjp solves its adjoint (Chen et al. 2018; Grathwohl et al. 2018;
   Finlay et al. 2020 for the regularisers r, s = +1 forward and -1 inverse so
   that r grows as the solve proceeds). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/cnf.h"
#include "nflow/config.h"
#include "nflow/model.h"
#include "nflow/pool.h"
#include "solver.h"

_Static_assert(sizeof(void *) <= sizeof(double), "a pointer must fit a workspace slot");

typedef struct cnf {
  nf_odenet *net;          /* the dynamics: a network, */
  nf_field field;          /* or the user's field when net == NULL */
  size_t n_dyn;            /* the dynamics' parameters */
  nf_cnf_opts opts;
  int has_T;               /* theta_T follows the dynamics' parameters */
  size_t n_reg;            /* regulariser states per row: 0, 1 or 2 */
  atomic_size_t solves, nfe, steps, rejected, gradients, nfe_adjoint, steps_adjoint;
  atomic_size_t integrators;
} cnf;

/* Workspace header slots, then the arrays (see cnf_layout). The worker
   scratch (SLOT_TEAM, a pointer like SLOT_ODE) holds, per worker of the pool
   apply was given (SLOT_POOL), the net's scratch for SLOT_TEAM_ROWS rows,
   n_dyn parameter cotangents and g_t: SLOT_TEAM_STRIDE doubles each. */
enum { SLOT_ODE, SLOT_ODE_ROWS, SLOT_PENALTY_WEIGHT, SLOT_PENALTY, SLOT_DIR, SLOT_EXACT,
       SLOT_POOL, SLOT_TEAM, SLOT_TEAM_ROWS, SLOT_TEAM_T, SLOT_TEAM_STRIDE, N_SLOTS };

/* A CNF splits a right-hand side across the pool only with this many rows per worker. */
#define CNF_MIN_SLICE 4

/* Where the arrays of a workspace for n rows live. */
typedef struct cnf_layout {
  size_t m;                /* state values per row: d + 1 + n_reg */
  double *y, *probe, *kin, *jac, *g_y1, *g_y0, *g_theta, *dyn_work;
  size_t n_theta;          /* the ODE's parameters: the net's, then n x c context entries */
} cnf_layout;

/* Everything a right-hand side or adjoint callback needs for one call. */
typedef struct cnf_call {
  const nf_layer *layer;
  const double *theta;     /* the layer's parameters: the dynamics', then theta_T */
  const cnf *c;
  size_t n;
  const double *ctx;
  double sign;             /* s of the regulariser equations */
  cnf_layout lay;
  const double *probe;     /* this call's Hutchinson probes; NULL: the exact trace */
  const nf_pool *pool;     /* workers splitting each right-hand side's rows; NULL: serial */
  double *team;            /* their scratch (SLOT_TEAM) */
  size_t team_stride;
} cnf_call;

/* The family's data of a CNF layer. */
static const cnf *cnf_of(const nf_layer *layer) { return layer->data; }

/* Carves the arrays of a workspace for n rows (after the header slots). */
static cnf_layout cnf_layout_of(const nf_layer *layer, size_t n, double *work)
{
  const cnf *c = cnf_of(layer);
  size_t d = layer->dim;
  cnf_layout l;
  l.m = d + 1 + c->n_reg;
  l.n_theta = c->n_dyn + n * layer->ctx_dim;
  double *p = work + N_SLOTS;
  l.y = p;        p += n * l.m;
  l.probe = p;    p += c->opts.trace == NF_TRACE_EXACT ? 0 : n * d;
  l.kin = p;      p += n;
  l.jac = p;      p += n;
  l.g_y1 = p;     p += n * l.m;
  l.g_y0 = p;     p += n * l.m;
  l.g_theta = p;  p += l.n_theta;
  l.dyn_work = p;
  return l;
}

/* Whether an evaluation may ask for the exact trace (nf_apply_opts.exact):
   always for an exact-trace CNF, else up to NF_EXACT_LOGDET_MAX_DIM. */
static int can_be_exact(const nf_layer *layer)
{
  return cnf_of(layer)->opts.trace == NF_TRACE_EXACT || layer->dim <= NF_EXACT_LOGDET_MAX_DIM;
}

/* Doubles of the dynamics' scratch for n rows (SIZE_MAX on overflow): the
   net's for its trace (exact when an evaluation may ask), or the field's
   shifted z and two f for the divergence. */
static size_t dyn_work_size(const nf_layer *layer, size_t n)
{
  const cnf *c = cnf_of(layer);
  size_t dyn;
  if (!c->net) return nf_size_mul3(3, n, layer->dim, &dyn) ? SIZE_MAX : dyn;
  dyn = nf_odenet_work_size(c->net, n, c->opts.trace == NF_TRACE_EXACT);
  size_t exact = can_be_exact(layer) ? nf_odenet_work_size(c->net, n, 1) : 0;
  return exact > dyn ? exact : dyn;
}

/* Doubles of workspace for n rows: slots, state, probe, gradients, dynamics scratch. */
static size_t cnf_work_size(const nf_layer *layer, size_t n)
{
  const cnf *c = cnf_of(layer);
  /* N_SLOTS + n (3m + probe + 2 + c) + n_dyn + dynamics scratch, 0 on overflow */
  size_t d = layer->dim, m = d + 1 + c->n_reg; /* d: nf_check_dim */
  size_t per_row = 3 * m + (c->opts.trace == NF_TRACE_EXACT ? 0 : d) + 2, rows, total;
  if (nf_size_add(per_row, layer->ctx_dim, &per_row) || nf_size_mul(n, per_row, &rows))
    return 0;
  size_t dyn = dyn_work_size(layer, n);
  if (dyn == SIZE_MAX || nf_size_add(rows, dyn, &total) ||
      nf_size_add(total, N_SLOTS + c->n_dyn, &total))
    return 0;
  return total;
}

/* The pointer kept in a workspace slot (NULL before it is set). */
static void *slot_ptr(const double *work, int slot)
{
  void *p;
  memcpy(&p, work + slot, sizeof p);
  return p;
}

static void set_slot_ptr(double *work, int slot, const void *p) { memcpy(work + slot, &p, sizeof p); }

/* The integrator kept in the workspace's first slot (NULL before the first apply). */
static nf_ode *slot_ode(const double *work) { return slot_ptr(work, SLOT_ODE); }

/* work_release hook: frees the integrator (and its checkpoints) and the
   worker scratch kept in work. */
static void cnf_work_release(const nf_layer *layer, size_t n, double *work)
{
  (void)layer;
  (void)n;
  nf_ode_free(slot_ode(work));
  free(slot_ptr(work, SLOT_TEAM));
  set_slot_ptr(work, SLOT_ODE, NULL);
  set_slot_ptr(work, SLOT_TEAM, NULL);
}

/* Records the pool an apply of n rows splits its right-hand sides with
   (SLOT_POOL; none for a user field, one thread, or fewer than
   CNF_MIN_SLICE rows per worker) and sizes the workers' scratch for it:
   made at the first such apply, remade only for more rows or threads. */
static nf_status team_for(const nf_layer *layer, size_t n, const nf_pool *pool, double *work)
{
  const cnf *c = cnf_of(layer);
  size_t T = nf_pool_threads(pool), rows = (n + T - 1) / T, stride, total;
  if (!c->net || T < 2 || n < CNF_MIN_SLICE * T) pool = NULL;
  set_slot_ptr(work, SLOT_POOL, pool);
  if (!pool || (slot_ptr(work, SLOT_TEAM) && work[SLOT_TEAM_ROWS] >= (double)rows &&
                work[SLOT_TEAM_T] == (double)T))
    return NF_OK;
  free(slot_ptr(work, SLOT_TEAM));
  set_slot_ptr(work, SLOT_TEAM, NULL);
  size_t dyn = dyn_work_size(layer, rows);
  if (dyn == SIZE_MAX || nf_size_add(dyn, c->n_dyn + 1, &stride) ||
      nf_size_mul(stride, T, &total))
    return nf_fail(NF_EINVAL, "cnf: the scratch of %zu workers for %zu rows overflows", T, n);
  double *team = nf_dalloc(total);
  if (!team) return nf_fail(NF_ENOMEM, "cnf: out of memory for %zu workers' scratch", T);
  set_slot_ptr(work, SLOT_TEAM, team);
  work[SLOT_TEAM_ROWS] = (double)rows;
  work[SLOT_TEAM_T] = (double)T;
  work[SLOT_TEAM_STRIDE] = (double)stride;
  return NF_OK;
}

/* The one integrator of this workspace, serving n rows. It is made at the
   first apply for that apply's n and kept for the workspace's life; smaller
   batches (a chunked call's short last chunk, an epoch's last batch) are
   served by nf_ode_resize, which builds no integrator or SUNContext. Only a
   batch larger than every one before remakes it, for the larger size: the
   flow's calls apply full chunks first, so there it is made once. */
static nf_ode *ode_for(const nf_layer *layer, size_t n, double *work, const cnf_layout *lay)
{
  cnf *c = layer->data;
  nf_ode *ode = slot_ode(work);
  size_t states = n * lay->m;
  if (ode && nf_ode_capacity(ode) >= states) {
    if (nf_ode_size(ode) != states && nf_ode_resize(ode, states, lay->n_theta)) {
      work[SLOT_ODE_ROWS] = 0.0; /* the solve is refused: vjp finds no record */
      return NULL;
    }
  } else {
    nf_ode_free(ode);
    ode = nf_ode_new(states, lay->n_theta, &c->opts.ode);
    memcpy(work + SLOT_ODE, &ode, sizeof ode);
    if (ode) atomic_fetch_add(&c->integrators, 1);
  }
  work[SLOT_ODE_ROWS] = ode ? (double)n : 0.0;
  return ode;
}

/* T = theta_T^2 when learned, else the fixed end time. */
static double end_time(const nf_layer *layer, const double *theta)
{
  const cnf *c = cnf_of(layer);
  if (!c->has_T || !theta) return c->opts.end_time;
  double s = theta[c->n_dyn];
  return s * s;
}

/* Step of the central differences along coordinate value v: about eps^(1/3) scaled,
   where truncation and rounding errors balance near 1e-10 relative. */
static double fd_step(double v) { return 6e-6 * fmax(1.0, fabs(v)); }

/* Central-difference divergence sum_k (f(z + h e_k) - f(z - h e_k))_k / 2h of the
   user's field, h = fd_step(z_ik). */
static int field_fd_divergence(const cnf_call *k, double t, const double *z, double *div)
{
  const nf_field *fl = &k->c->field;
  size_t n = k->n, d = k->layer->dim;
  double *zs = k->lay.dyn_work, *fp = zs + n * d, *fm = fp + n * d;
  const double *theta = k->theta;
  memset(div, 0, n * sizeof *div);
  memcpy(zs, z, n * d * sizeof *zs);
  for (size_t j = 0; j < d; j++) {
    for (size_t i = 0; i < n; i++) zs[i * d + j] = z[i * d + j] + fd_step(z[i * d + j]);
    if (fl->f(t, n, zs, k->ctx, theta, fp, fl->user)) return 1;
    for (size_t i = 0; i < n; i++) zs[i * d + j] = z[i * d + j] - fd_step(z[i * d + j]);
    if (fl->f(t, n, zs, k->ctx, theta, fm, fl->user)) return 1;
    for (size_t i = 0; i < n; i++) {
      zs[i * d + j] = z[i * d + j];
      div[i] += (fp[i * d + j] - fm[i * d + j]) / (2 * fd_step(z[i * d + j]));
    }
  }
  return 0;
}

/* The user's field and its divergence into the z and l blocks of dydt. */
static int field_rhs(const cnf_call *k, double t, const double *y, double *dydt)
{
  const nf_field *fl = &k->c->field;
  size_t n = k->n, d = k->layer->dim;
  double *div = dydt + n * d;
  if (fl->f(t, n, y, k->ctx, k->theta, dydt, fl->user)) return 1;
  if (fl->divergence_free) {
    memset(div, 0, n * sizeof *div);
    return 0;
  }
  return fl->div ? fl->div(t, n, y, k->ctx, k->theta, div, fl->user)
                 : field_fd_divergence(k, t, y, div);
}

/* Negates rows [r0, r0 + ns) of the regulariser blocks of dydt (s = -1). */
static void flip_reg(const cnf_call *k, double *dydt, size_t r0, size_t ns)
{
  size_t n = k->n;
  double *reg = dydt + n * (k->layer->dim + 1);
  for (size_t q = 0; k->sign < 0 && q < k->c->n_reg; q++)
    for (size_t i = r0; i < r0 + ns; i++) reg[q * n + i] = -reg[q * n + i];
}

/* dy/dt for rows [r0, r0 + ns) of the net's augmented state: f, the trace
   and the regularisers into those rows of each block of dydt (work: the
   net's scratch for ns rows). */
static nf_status rhs_rows(const cnf_call *k, double t, const double *y, double *dydt, size_t r0,
                          size_t ns, double *work)
{
  const cnf *c = k->c;
  size_t n = k->n, d = k->layer->dim, cd = k->layer->ctx_dim;
  double *kin = c->opts.kinetic_weight > 0 ? dydt + n * (d + 1) + r0 : NULL;
  double *jac = c->opts.jacobian_weight > 0 ? dydt + n * (d + 1) + (kin ? n : 0) + r0 : NULL;
  nf_status st = nf_odenet_trace(c->net, k->theta, ns, t, y + r0 * d,
                                 k->ctx ? k->ctx + r0 * cd : NULL,
                                 k->probe ? k->probe + r0 * d : NULL, dydt + r0 * d,
                                 dydt + n * d + r0, kin, jac, work);
  if (!st) flip_reg(k, dydt, r0, ns);
  return st;
}

/* The adjoint products (see cnf_rhs_vjp) for rows [r0, r0 + ns): g_y of
   those rows, ADDS into g_params (n_dyn, may be NULL) and into those rows of
   g_ctx (n x c, may be NULL), WRITES *g_t (may be NULL); dydt's rows when
   dydt != NULL. */
static nf_status rhs_vjp_rows(const cnf_call *k, double t, const double *y, const double *a,
                              double *dydt, double *g_y, double *g_params, double *g_ctx,
                              double *g_t, size_t r0, size_t ns, double *work)
{
  const cnf *c = k->c;
  size_t n = k->n, d = k->layer->dim, cd = k->layer->ctx_dim;
  const double *a_k = c->opts.kinetic_weight > 0 ? a + n * (d + 1) + r0 : NULL;
  const double *a_j = c->opts.jacobian_weight > 0 ? a + n * (d + 1) + (a_k ? n : 0) + r0 : NULL;
  if (k->sign < 0) { /* the regulariser equations carry s = -1 */
    for (size_t i = 0; a_k && i < ns; i++) k->lay.kin[r0 + i] = -a_k[i];
    for (size_t i = 0; a_j && i < ns; i++) k->lay.jac[r0 + i] = -a_j[i];
    a_k = a_k ? k->lay.kin + r0 : NULL;
    a_j = a_j ? k->lay.jac + r0 : NULL;
  }
  double *kin = dydt && c->opts.kinetic_weight > 0 ? dydt + n * (d + 1) + r0 : NULL;
  double *jac = dydt && c->opts.jacobian_weight > 0 ? dydt + n * (d + 1) + (kin ? n : 0) + r0
                                                     : NULL;
  nf_status st = nf_odenet_adjoint(
      c->net, k->theta, ns, t, y + r0 * d, k->ctx ? k->ctx + r0 * cd : NULL,
      k->probe ? k->probe + r0 * d : NULL, a + r0 * d, a + n * d + r0, a_k, a_j,
      dydt ? dydt + r0 * d : NULL, dydt ? dydt + n * d + r0 : NULL, kin, jac, g_y + r0 * d,
      g_params, g_t, g_ctx ? g_ctx + r0 * cd : NULL, work);
  if (!st && dydt) flip_reg(k, dydt, r0, ns);
  return st;
}

/* One right-hand side (or adjoint product) split across the pool's workers. */
typedef struct rhs_job {
  const cnf_call *k;
  double t;
  const double *y, *a;     /* a: NULL for the right-hand side */
  double *dydt, *g_y, *g_ctx;
  int want_theta, want_t;
} rhs_job;

/* Pool task s: worker s's contiguous rows, its own net scratch and, for the
   adjoint, its own parameter cotangents and g_t (zeroed first). */
static nf_status rhs_task(size_t s, size_t worker, void *user)
{
  (void)worker;
  const rhs_job *j = user;
  const cnf_call *k = j->k;
  size_t T = nf_pool_threads(k->pool), r0 = nf_slice_lo(k->n, T, s);
  size_t ns = nf_slice_lo(k->n, T, s + 1) - r0, n_dyn = k->c->n_dyn;
  double *work = k->team + s * k->team_stride, *g_t = work + k->team_stride - 1;
  double *g_params = g_t - n_dyn;
  if (!j->a) return rhs_rows(k, j->t, j->y, j->dydt, r0, ns, work);
  memset(g_params, 0, (n_dyn + 1) * sizeof *g_params);
  return rhs_vjp_rows(k, j->t, j->y, j->a, j->dydt, j->g_y, j->want_theta ? g_params : NULL,
                      j->g_ctx, j->want_t ? g_t : NULL, r0, ns, work);
}

/* Runs a job on the pool; then ADDS the workers' parameter cotangents into
   g_params and WRITES their g_t sum to *g_t, in worker order. */
static nf_status run_team(const rhs_job *j, double *g_params, double *g_t)
{
  const cnf_call *k = j->k;
  size_t T = nf_pool_threads(k->pool), n_dyn = k->c->n_dyn;
  nf_status st = nf_pool_run(k->pool, T, rhs_task, (void *)j);
  if (st || !j->a) return st;
  if (g_t) *g_t = 0;
  for (size_t s = 0; s < T; s++) {
    const double *gp = k->team + (s + 1) * k->team_stride - 1 - n_dyn;
    for (size_t p = 0; g_params && p < n_dyn; p++) g_params[p] += gp[p];
    if (g_t) *g_t += gp[n_dyn];
  }
  return NF_OK;
}

/* dy/dt of the augmented state: f and the trace (and the regularisers) written
   straight into the blocks of dydt; rows split across the pool when there is one. */
static int cnf_rhs(double t, const double *y, double *dydt, void *user)
{
  const cnf_call *k = user;
  if (!k->c->net) return field_rhs(k, t, y, dydt);
  if (!k->pool) return rhs_rows(k, t, y, dydt, 0, k->n, k->lay.dyn_work) != NF_OK;
  rhs_job j = {k, t, y, NULL, dydt, NULL, NULL, 0, 0};
  return run_team(&j, NULL, NULL) != NF_OK;
}

/* cnf_rhs_vjp for the user's field: its adjoint callback with a = a_z, w = a_l. */
static int field_rhs_vjp(const cnf_call *k, double t, const double *y, const double *a,
                         double *dydt, double *g_y, double *g_theta, double *g_t)
{
  const nf_field *fl = &k->c->field;
  size_t n = k->n, d = k->layer->dim;
  if (dydt && field_rhs(k, t, y, dydt)) return 1;
  double *g_ctx = g_theta && k->layer->ctx_dim ? g_theta + k->c->n_dyn : NULL;
  if (fl->adjoint(t, n, y, k->ctx, k->theta, a, fl->divergence_free ? NULL : a + n * d,
                  g_y, g_theta, g_t, g_ctx, fl->user))
    return 1;
  memset(g_y + n * d, 0, n * sizeof *g_y);
  return 0;
}

/* a^T d(dy/dt)/dy, a^T d(dy/dt)/dtheta (net, then context) and a^T d(dy/dt)/dt:
   the gradient of S = a_z.f + a_l tr + s a_k |f|^2 + s a_j |J|_F^2 (nf_odenet_adjoint),
   and dy/dt itself when dydt != NULL, from the same pass. */
static int cnf_rhs_vjp(double t, const double *y, const double *a, double *dydt, double *g_y,
                       double *g_theta, double *g_t, void *user)
{
  const cnf_call *k = user;
  const cnf *c = k->c;
  size_t n = k->n, d = k->layer->dim;
  if (!c->net) return field_rhs_vjp(k, t, y, a, dydt, g_y, g_theta, g_t);
  double *g_ctx = g_theta && k->layer->ctx_dim ? g_theta + c->n_dyn : NULL;
  nf_status st;
  if (k->pool) {
    rhs_job j = {k, t, y, a, dydt, g_y, g_ctx, g_theta != NULL, g_t != NULL};
    st = run_team(&j, g_theta, g_t);
  } else {
    st = rhs_vjp_rows(k, t, y, a, dydt, g_y, g_theta, g_ctx, g_t, 0, n, k->lay.dyn_work);
  }
  if (st) return 1;
  memset(g_y + n * d, 0, n * (1 + c->n_reg) * sizeof *g_y);
  return 0;
}

/* The vjp alone (the CVODES and discrete adjoints call it apart from the rhs). */
static int cnf_vjp(double t, const double *y, const double *a, double *g_y, double *g_theta,
                   double *g_t, void *user)
{
  return cnf_rhs_vjp(t, y, a, NULL, g_y, g_theta, g_t, user);
}

/* The call context and the ODE system of one apply or vjp. */
static cnf_call make_call(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                          const double *ctx, double *work)
{
  cnf_call k = {layer, theta, cnf_of(layer), n, ctx, dir == NF_FORWARD ? 1.0 : -1.0,
                cnf_layout_of(layer, n, work), NULL, slot_ptr(work, SLOT_POOL),
                slot_ptr(work, SLOT_TEAM), (size_t)work[SLOT_TEAM_STRIDE]};
  k.probe = work[SLOT_EXACT] != 0.0 ? NULL : k.lay.probe;
  return k;
}

/* Integration interval of a direction: [0, T] forward, [T, 0] inverse. */
static void interval(const nf_layer *layer, const double *theta, nf_dir dir, double *t0,
                     double *t1)
{
  double T = end_time(layer, theta);
  *t0 = dir == NF_FORWARD ? 0.0 : T;
  *t1 = dir == NF_FORWARD ? T : 0.0;
}

/* One Hutchinson probe per row from the counter-based stream keyed by
   (the call's seed, probe_seed): row i's probe depends only on those and its
   global index row0 + i, so it is the same whatever the workspace, the
   chunking or the thread. */
static void draw_probe(const cnf *c, const nf_apply_opts *opts, size_t n, size_t d,
                       double *probe)
{
  uint64_t key = nf_noise_key(opts->seed, c->opts.probe_seed);
  nf_noise_fill(c->opts.trace == NF_TRACE_GAUSSIAN ? NF_NOISE_NORMAL : NF_NOISE_RADEMACHER, key,
                opts->row0, n, d, probe);
}

/* Integrates [z, l, r] from the direction's start to its end; out = z(end),
   logdet += l(end); records the penalty and direction for vjp. */
static nf_status cnf_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                           const double *ctx, double *out, double *logdet, const nf_apply_opts *opts, double *work)
{
  cnf *c = layer->data;
  size_t d = layer->dim;
  work[SLOT_EXACT] = c->opts.trace == NF_TRACE_EXACT || (opts->exact && can_be_exact(layer));
  nf_status st = team_for(layer, n, opts->pool, work);
  if (st) return st;
  cnf_call k = make_call(layer, theta, dir, n, ctx, work);
  nf_ode *ode = ode_for(layer, n, work, &k.lay);
  if (!ode) return nf_last_status() ? nf_last_status() : NF_ENOMEM;
  if (k.probe) draw_probe(c, opts, n, d, k.lay.probe);
  memcpy(k.lay.y, in, n * d * sizeof *in);
  memset(k.lay.y + n * d, 0, n * (1 + c->n_reg) * sizeof *in);
  nf_ode_system sys = {cnf_rhs, cnf_vjp, NULL, &k, cnf_rhs_vjp};
  double t0, t1;
  interval(layer, theta, dir, &t0, &t1);
  st = nf_ode_solve(ode, &sys, t0, t1, k.lay.y);
  const nf_ode_stats *stats = nf_ode_get_stats(ode);
  atomic_fetch_add(&c->solves, 1);
  atomic_fetch_add(&c->nfe, stats->nfe);
  atomic_fetch_add(&c->steps, stats->steps);
  atomic_fetch_add(&c->rejected, stats->rejected);
  if (st) return st;
  memcpy(out, k.lay.y, n * d * sizeof *out);
  const double *l = k.lay.y + n * d, *r = l + n;
  double penalty = 0, w[2] = {c->opts.kinetic_weight, c->opts.jacobian_weight};
  for (size_t i = 0; logdet && i < n; i++) logdet[i] += l[i];
  for (size_t q = 0, slot = 0; q < 2; q++) {
    if (!(w[q] > 0)) continue;
    for (size_t i = 0; i < n; i++) penalty += w[q] * r[slot * n + i] / (double)n;
    slot++;
  }
  work[SLOT_PENALTY] = penalty;
  work[SLOT_PENALTY_WEIGHT] = opts->penalty_weight;
  work[SLOT_DIR] = (double)dir;
  return NF_OK;
}

/* The adjoint solve: dL/dy(end) from g_out, g_logdet and the penalty weights,
   pulled back to g_in, the dynamics' and T's gradients and the context's. */
static nf_status cnf_vjp_layer(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                               const double *ctx, const double *out, const double *g_out,
                               const double *g_logdet, double *g_in, double *g_ctx,
                               double *g_theta, double *work)
{
  (void)in;
  (void)out;
  cnf *c = layer->data;
  size_t d = layer->dim;
  cnf_call k = make_call(layer, theta, dir, n, ctx, work);
  if (!c->net && !c->field.adjoint)
    return nf_fail(NF_EINVAL, "cnf vjp: the vector field has no adjoint callback, so no gradient");
  nf_ode *ode = slot_ode(work);
  if (!ode || work[SLOT_ODE_ROWS] != (double)n || work[SLOT_DIR] != (double)dir)
    return nf_fail(NF_ESTATE, "cnf vjp: no apply of this direction and batch size recorded in the workspace");
  /* dL/dy(t1): the outputs, the log-det, and the penalty's weights over the batch */
  double *g1 = k.lay.g_y1, w[2] = {c->opts.kinetic_weight, c->opts.jacobian_weight};
  memcpy(g1, g_out, n * d * sizeof *g1);
  for (size_t i = 0; i < n; i++) g1[n * d + i] = g_logdet ? g_logdet[i] : 0.0;
  for (size_t q = 0, slot = 0; q < 2; q++) {
    if (!(w[q] > 0)) continue;
    for (size_t i = 0; i < n; i++)
      g1[n * (d + 1 + slot) + i] = w[q] * work[SLOT_PENALTY_WEIGHT] / (double)n;
    slot++;
  }
  memset(k.lay.g_theta, 0, k.lay.n_theta * sizeof *k.lay.g_theta);
  nf_ode_system sys = {cnf_rhs, cnf_vjp, NULL, &k, cnf_rhs_vjp};
  double g_t0 = 0, g_t1 = 0;
  nf_status st = nf_ode_gradient(ode, &sys, g1, k.lay.g_y0, k.lay.g_theta, &g_t0, &g_t1);
  if (st) return st;
  const nf_ode_stats *stats = nf_ode_get_stats(ode);
  atomic_fetch_add(&c->gradients, 1);
  atomic_fetch_add(&c->nfe_adjoint, stats->nfe_adjoint);
  atomic_fetch_add(&c->steps_adjoint, stats->steps_adjoint);
  if (g_in) memcpy(g_in, k.lay.g_y0, n * d * sizeof *g_in);
  for (size_t p = 0; g_theta && p < c->n_dyn; p++) g_theta[p] += k.lay.g_theta[p];
  for (size_t i = 0; g_ctx && i < n * layer->ctx_dim; i++) g_ctx[i] += k.lay.g_theta[c->n_dyn + i];
  if (g_theta && c->has_T) /* T is t1 forward, t0 inverse; dT/dtheta_T = 2 theta_T */
    g_theta[c->n_dyn] += (dir == NF_FORWARD ? g_t1 : g_t0) * 2.0 * theta[c->n_dyn];
  return NF_OK;
}

/* penalty hook: the weighted RNODE terms of the last apply, batch-averaged. */
static double cnf_penalty(const nf_layer *layer, size_t n, const double *work)
{
  (void)layer;
  (void)n;
  return work[SLOT_PENALTY];
}

/* destroy hook: the net and the copied hidden widths. */
static void cnf_destroy(void *data)
{
  cnf *c = data;
  if (!c) return;
  nf_odenet_free(c->net);
  free((size_t *)c->opts.hidden);
  free((char *)c->field.name);
  free(c);
}

/* check_params: a learned end time T = theta_T^2 must be positive and finite. */
static nf_status cnf_check_params(const nf_layer *layer, const double *theta)
{
  const cnf *c = cnf_of(layer);
  if (!c->has_T) return NF_OK;
  double T = theta[c->n_dyn] * theta[c->n_dyn];
  if (T > 0 && isfinite(T)) return NF_OK;
  return nf_fail(NF_EDOMAIN, "cnf: parameter %zu (theta_T) = %g gives the end time T = "
                 "theta_T^2 = %g, which must be positive and finite", c->n_dyn,
                 theta[c->n_dyn], T);
}

static nf_status cnf_save(const nf_layer *layer, nf_config *cfg);
static nf_layer *cnf_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                          const nf_resolver *res);

const nf_layer_type nf_cnf_type = {
  .check_params = cnf_check_params,
  .name = "cnf",
  .work_size = cnf_work_size,
  .apply = cnf_apply,
  .vjp = cnf_vjp_layer,
  .destroy = cnf_destroy,
  .work_release = cnf_work_release,
  .penalty = cnf_penalty,
  .save = cnf_save,
  .load = cnf_load,
  .couples_rows = 1, /* the solver chooses its steps for the whole batch */
};

nf_cnf_opts nf_cnf_defaults(void)
{
  static const size_t ffjord_hidden[] = {64, 64, 64};
  nf_cnf_opts o;
  memset(&o, 0, sizeof o);
  o.n_hidden = 3;
  o.hidden = ffjord_hidden;
  o.kind = NF_ODENET_CONCATSQUASH;
  o.act = NF_ODENET_TANH;
  o.end_time = 0.5;
  o.train_end_time = 1;
  o.trace = NF_TRACE_EXACT;
  o.ode = nf_ode_defaults(NF_ODE_DOPRI5);
  o.ode.rtol = 1e-5;
  o.ode.atol = 1e-5;
  o.ode.grad = NF_GRAD_BACKSOLVE;
  o.probe_seed = 0x5eed;
  o.precision = NF_PRECISION_DOUBLE;
  return o;
}

static const char *const trace_names[] = {"exact", "gaussian", "rademacher"};

const char *nf_cnf_trace_name(nf_trace_kind trace)
{
  return (unsigned)trace < 3 ? trace_names[trace] : "?";
}

nf_status nf_cnf_trace_parse(const char *name, nf_trace_kind *trace)
{
  int i = 0;
  nf_status st = nf_parse_choice("trace estimator", name, trace_names, 3, trace ? &i : NULL);
  if (st == NF_OK) *trace = (nf_trace_kind)i;
  return st;
}

/* The smallest tolerance a single-precision CNF accepts. Its ODE state is
   double (the solver checks nf_ode_tolerance_floor(DBL_EPSILON) itself, which
   is all a double net needs), but f computed with unit roundoff u carries
   relative noise near u into every stage, which the embedded error estimate
   must not mistake for truncation error: 10 u (single: 1.2e-6, so FFJORD's
   1e-5 is fine, as it is in FFJORD's float32). */
static double dynamics_tolerance_floor(nf_precision precision)
{
  return 10 * nf_precision_epsilon(precision);
}

/* Checks the options nf_cnf_new cannot build from. */
static nf_status check_opts(const char *fn, size_t dim, size_t ctx_dim, const nf_cnf_opts *o)
{
  if (!o) return nf_fail(NF_EINVAL, "%s: opts is NULL", fn);
  nf_status st = nf_check_dim(fn, dim);
  if (!st && ctx_dim) st = nf_check_dim(fn, ctx_dim);
  if (st) return st;
  if (!(o->end_time > 0) || !isfinite(o->end_time))
    return nf_fail(NF_EINVAL, "%s: end_time %g is not a positive finite number", fn, o->end_time);
  if (o->trace != NF_TRACE_EXACT && o->trace != NF_TRACE_GAUSSIAN && o->trace != NF_TRACE_RADEMACHER)
    return nf_fail(NF_EINVAL, "%s: unknown trace estimator %d", fn, (int)o->trace);
  const char *names[2] = {"kinetic_weight", "jacobian_weight"};
  double w[2] = {o->kinetic_weight, o->jacobian_weight};
  for (int i = 0; i < 2; i++)
    if (!(w[i] >= 0 && w[i] <= NF_CNF_MAX_WEIGHT))
      return nf_fail(NF_EINVAL,
                     "%s: regularisation weight %s = %g must be in [0, %g] (NF_CNF_MAX_WEIGHT)",
                     fn, names[i], w[i], NF_CNF_MAX_WEIGHT);
  if (o->n_hidden > 0 && !o->hidden) return nf_fail(NF_EINVAL, "%s: hidden is NULL", fn);
  st = nf_check_precision(fn, o->precision);
  if (st) return st;
  double floor = dynamics_tolerance_floor(o->precision);
  if (o->precision != NF_PRECISION_DOUBLE && !(o->ode.rtol >= floor && o->ode.atol >= floor))
    return nf_fail(NF_EINVAL, "%s: ode.rtol = %g and ode.atol = %g must be >= %.3g (10 x the "
                   "unit roundoff of %s precision, the dynamics' arithmetic, whose rounding "
                   "noise the error estimate must not see)", fn, o->ode.rtol,
                   o->ode.atol, floor, nf_precision_name(o->precision));
  return NF_OK;
}

/* nf_cnf_new's body; rng NULL leaves the net's parameters zero (the loader's case). */
static nf_layer *cnf_build(size_t dim, size_t ctx_dim, const nf_cnf_opts *opts, nf_rng *rng)
{
  if (check_opts("nf_cnf_new", dim, ctx_dim, opts)) return NULL;
  cnf *c = calloc(1, sizeof *c);
  size_t *hidden = malloc((opts->n_hidden + 1) * sizeof *hidden);
  if (!c || !hidden) {
    free(c);
    free(hidden);
    nf_fail(NF_ENOMEM, "nf_cnf_new: out of memory");
    return NULL;
  }
  if (opts->n_hidden) memcpy(hidden, opts->hidden, opts->n_hidden * sizeof *hidden);
  c->opts = *opts;
  c->opts.hidden = hidden;
  c->net = nf_odenet_new(dim, ctx_dim, opts->n_hidden, hidden, opts->kind, opts->act);
  if (c->net) nf_odenet_set_precision(c->net, opts->precision);
  nf_ode *probe_ode = c->net ? nf_ode_new(1, 1, &opts->ode) : NULL; /* validates opts->ode */
  if (!probe_ode) {
    cnf_destroy(c);
    return NULL;
  }
  nf_ode_free(probe_ode);
  c->n_dyn = nf_odenet_n_params(c->net);
  c->has_T = opts->train_end_time != 0;
  c->n_reg = (opts->kinetic_weight > 0) + (opts->jacobian_weight > 0);
  nf_layer *layer = nf_layer_create(&nf_cnf_type, dim, ctx_dim, c->n_dyn + (size_t)c->has_T, c);
  if (!layer) return NULL;
  if (rng) nf_odenet_init(c->net, rng, layer->init);
  if (c->has_T) layer->init[c->n_dyn] = sqrt(opts->end_time);
  return layer;
}

nf_layer *nf_cnf_new(size_t dim, size_t ctx_dim, const nf_cnf_opts *opts, nf_rng *rng)
{
  if (!rng) {
    nf_fail(NF_EINVAL, "nf_cnf_new: rng is NULL");
    return NULL;
  }
  return cnf_build(dim, ctx_dim, opts, rng);
}

nf_layer *nf_cnf_field_new(size_t dim, size_t ctx_dim, const nf_field *field,
                           const nf_cnf_opts *opts)
{
  const char *fn = "nf_cnf_field_new";
  if (!field || !field->f) {
    nf_fail(NF_EINVAL, "%s: the field or its f callback is NULL", fn);
    return NULL;
  }
  if (check_opts(fn, dim, ctx_dim, opts)) return NULL;
  if (field->n_params > SIZE_MAX / sizeof(double) - 1) {
    nf_fail(NF_EINVAL, "%s: field '%s' with %zu parameters overflows the address space", fn,
            field->name ? field->name : "", field->n_params);
    return NULL;
  }
  if (opts->trace != NF_TRACE_EXACT || opts->kinetic_weight > 0 || opts->jacobian_weight > 0) {
    nf_fail(NF_EINVAL, "%s: a user field takes the exact trace (its divergence) and no RNODE regularisation", fn);
    return NULL;
  }
  nf_ode *check = nf_ode_new(1, 1, &opts->ode); /* validates opts->ode */
  if (!check) return NULL;
  nf_ode_free(check);
  cnf *c = calloc(1, sizeof *c);
  if (!c) {
    nf_fail(NF_ENOMEM, "%s: out of memory", fn);
    return NULL;
  }
  c->opts = *opts;
  c->opts.n_hidden = 0;
  c->opts.hidden = NULL;
  c->field = *field;
  c->field.name = NULL;
  if (field->name) {
    size_t len = strlen(field->name) + 1;
    char *name = malloc(len);
    if (!name) {
      cnf_destroy(c);
      nf_fail(NF_ENOMEM, "%s: out of memory", fn);
      return NULL;
    }
    c->field.name = memcpy(name, field->name, len);
  }
  c->n_dyn = field->n_params;
  c->has_T = opts->train_end_time != 0;
  nf_layer *layer = nf_layer_create(&nf_cnf_type, dim, ctx_dim, c->n_dyn + (size_t)c->has_T, c);
  if (layer && c->has_T) layer->init[c->n_dyn] = sqrt(opts->end_time);
  return layer;
}

nf_status nf_cnf_get_counters(const nf_layer *layer, nf_cnf_counters *out)
{
  if (!layer || layer->type != &nf_cnf_type || !out)
    return nf_fail(NF_EINVAL, "nf_cnf_get_counters: not a CNF layer, or out is NULL");
  const cnf *c = layer->data;
  out->solves = atomic_load(&c->solves);
  out->nfe = atomic_load(&c->nfe);
  out->steps = atomic_load(&c->steps);
  out->rejected = atomic_load(&c->rejected);
  out->gradients = atomic_load(&c->gradients);
  out->nfe_adjoint = atomic_load(&c->nfe_adjoint);
  out->steps_adjoint = atomic_load(&c->steps_adjoint);
  out->integrators = atomic_load(&c->integrators);
  return NF_OK;
}

nf_status nf_cnf_reset_counters(const nf_layer *layer)
{
  if (!layer || layer->type != &nf_cnf_type)
    return nf_fail(NF_EINVAL, "nf_cnf_reset_counters: not a CNF layer");
  cnf *c = layer->data;
  atomic_store(&c->solves, 0);
  atomic_store(&c->nfe, 0);
  atomic_store(&c->steps, 0);
  atomic_store(&c->rejected, 0);
  atomic_store(&c->gradients, 0);
  atomic_store(&c->nfe_adjoint, 0);
  atomic_store(&c->steps_adjoint, 0);
  atomic_store(&c->integrators, 0);
  return NF_OK;
}

double nf_cnf_end_time(const nf_layer *layer, const double *theta)
{
  return layer && layer->type == &nf_cnf_type ? end_time(layer, theta) : 0.0;
}

double nf_cnf_rhs_flops(const nf_layer *layer)
{
  if (!layer || layer->type != &nf_cnf_type || !((const cnf *)layer->data)->net) return 0.0;
  const cnf *c = layer->data;
  return nf_odenet_trace_flops(c->net, c->opts.trace == NF_TRACE_EXACT);
}

/* ---- model files: the configuration a loader rebuilds the layer from ---- */

/* A size as a config integer; NF_EINVAL naming key if it does not fit. */
static nf_status set_size(nf_config *cfg, const char *key, size_t v)
{
  if (v > (size_t)LLONG_MAX)
    return nf_fail(NF_EINVAL, "cnf save: %s = %zu does not fit a model file's integers", key, v);
  return nf_config_set_int(cfg, key, (long long)v);
}

/* save op: the dynamics (network kind, activation and hidden widths, or the
   user field's name, parameter count and divergence_free), the end time, the
   trace, probe_seed, the RNODE weights and every nf_ode_opts field, by name.
   NF_EINVAL for a user field without a name. */
static nf_status cnf_save(const nf_layer *layer, nf_config *cfg)
{
  const cnf *c = cnf_of(layer);
  const nf_cnf_opts *o = &c->opts;
  nf_status st;
  char seed[24];
  if (!c->net && !c->field.name)
    return nf_fail(NF_EINVAL, "cnf save: the user vector field has no name (nf_field.name), "
                   "so a loader could not find its callbacks");
  snprintf(seed, sizeof seed, "%" PRIu64, o->probe_seed);
  if (c->net) {
    if ((st = nf_config_set_string(cfg, "dynamics", "network")) ||
        (st = nf_config_set_string(cfg, "kind", nf_odenet_kind_name(o->kind))) ||
        (st = nf_config_set_string(cfg, "activation", nf_odenet_act_name(o->act))) ||
        (st = nf_config_set_sizes(cfg, "hidden", o->n_hidden, o->hidden)))
      return st;
    if ((st = nf_precision_save(cfg, o->precision))) return st;
  } else {
    if ((st = nf_config_set_string(cfg, "dynamics", "field")) ||
        (st = nf_config_set_string(cfg, "field", c->field.name)) ||
        (st = set_size(cfg, "field_n_params", c->field.n_params)) ||
        (st = nf_config_set_int(cfg, "divergence_free", c->field.divergence_free != 0)))
      return st;
  }
  if ((st = nf_config_set_real(cfg, "end_time", o->end_time)) ||
      (st = nf_config_set_int(cfg, "train_end_time", o->train_end_time != 0)) ||
      (st = nf_config_set_string(cfg, "trace", nf_cnf_trace_name(o->trace))) ||
      (st = nf_config_set_string(cfg, "probe_seed", seed)) ||
      (st = nf_config_set_real(cfg, "kinetic_weight", o->kinetic_weight)) ||
      (st = nf_config_set_real(cfg, "jacobian_weight", o->jacobian_weight)) ||
      (st = nf_config_set_string(cfg, "ode.method", nf_ode_method_name(o->ode.method))) ||
      (st = nf_config_set_string(cfg, "ode.grad", nf_ode_grad_name(o->ode.grad))) ||
      (st = nf_config_set_real(cfg, "ode.rtol", o->ode.rtol)) ||
      (st = nf_config_set_real(cfg, "ode.atol", o->ode.atol)) ||
      (st = nf_config_set_real(cfg, "ode.h0", o->ode.h0)) ||
      (st = set_size(cfg, "ode.max_steps", o->ode.max_steps)) ||
      (st = set_size(cfg, "ode.fixed_steps", o->ode.fixed_steps)) ||
      (st = nf_config_set_int(cfg, "ode.seminorm", o->ode.seminorm != 0)) ||
      (st = set_size(cfg, "ode.checkpoint_steps", o->ode.checkpoint_steps)))
    return st;
  return NF_OK;
}

/* A config string parsed into an enum by parse; NF_EFORMAT naming key otherwise. */
#define GET_ENUM(key, parse, out)                                                        \
  do {                                                                                   \
    const char *s_;                                                                      \
    if ((st = nf_config_get_string(cfg, key, &s_))) goto fail;                           \
    if ((st = parse(s_, out))) {                                                         \
      st = nf_fail_prefixed(NF_EFORMAT, "cnf load: config key '" key "'");               \
      goto fail;                                                                         \
    }                                                                                    \
  } while (0)

/* A config integer that must be 0 or 1. */
static nf_status get_flag(const nf_config *cfg, const char *key, int *v)
{
  long long x;
  nf_status st = nf_config_get_int(cfg, key, &x);
  if (st) return st;
  if (x != 0 && x != 1)
    return nf_fail(NF_EFORMAT, "cnf load: config key '%s' is %lld, not 0 or 1", key, x);
  *v = (int)x;
  return NF_OK;
}

/* load op: rebuilds the layer from cnf_save's configuration (zero parameters;
   the user field's callbacks from the resolver). */
static nf_layer *cnf_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                          const nf_resolver *res)
{
  nf_cnf_opts o = nf_cnf_defaults();
  size_t *hidden = NULL, n_hidden = 0;
  const char *dynamics, *seed;
  nf_layer *layer = NULL;
  nf_status st;
  if ((st = nf_config_get_string(cfg, "dynamics", &dynamics))) goto fail;
  if ((st = nf_config_get_real(cfg, "end_time", &o.end_time)) ||
      (st = get_flag(cfg, "train_end_time", &o.train_end_time)) ||
      (st = nf_config_get_string(cfg, "probe_seed", &seed)) ||
      (st = nf_config_get_real(cfg, "kinetic_weight", &o.kinetic_weight)) ||
      (st = nf_config_get_real(cfg, "jacobian_weight", &o.jacobian_weight)) ||
      (st = nf_config_get_real(cfg, "ode.rtol", &o.ode.rtol)) ||
      (st = nf_config_get_real(cfg, "ode.atol", &o.ode.atol)) ||
      (st = nf_config_get_real(cfg, "ode.h0", &o.ode.h0)) ||
      (st = nf_config_get_size(cfg, "ode.max_steps", &o.ode.max_steps)) ||
      (st = nf_config_get_size(cfg, "ode.fixed_steps", &o.ode.fixed_steps)) ||
      (st = get_flag(cfg, "ode.seminorm", &o.ode.seminorm)) ||
      (st = nf_config_get_size(cfg, "ode.checkpoint_steps", &o.ode.checkpoint_steps)))
    goto fail;
  GET_ENUM("trace", nf_cnf_trace_parse, &o.trace);
  GET_ENUM("ode.method", nf_ode_method_parse, &o.ode.method);
  GET_ENUM("ode.grad", nf_ode_grad_parse, &o.ode.grad);
  {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(seed, &end, 10);
    if (!*seed || *end || *seed == '-' || errno == ERANGE) {
      st = nf_fail(NF_EFORMAT, "cnf load: config key 'probe_seed' is \"%s\", not an unsigned "
                   "64-bit integer", seed);
      goto fail;
    }
    o.probe_seed = (uint64_t)v;
  }
  if (strcmp(dynamics, "network") == 0) {
    GET_ENUM("kind", nf_odenet_kind_parse, &o.kind);
    GET_ENUM("activation", nf_odenet_act_parse, &o.act);
    if ((st = nf_config_get_len(cfg, "hidden", &n_hidden))) goto fail;
    hidden = malloc((n_hidden + 1) * sizeof *hidden);
    if (!hidden) {
      st = nf_fail(NF_ENOMEM, "cnf load: out of memory");
      goto fail;
    }
    if ((st = nf_config_get_sizes(cfg, "hidden", n_hidden, hidden))) goto fail;
    if ((st = nf_precision_load(cfg, &o.precision))) goto fail;
    o.n_hidden = n_hidden;
    o.hidden = hidden;
    layer = cnf_build(dim, ctx_dim, &o, NULL);
  } else if (strcmp(dynamics, "field") == 0) {
    const char *name;
    long long div_free;
    nf_field field;
    memset(&field, 0, sizeof field);
    if ((st = nf_config_get_string(cfg, "field", &name)) ||
        (st = nf_config_get_size(cfg, "field_n_params", &field.n_params)) ||
        (st = nf_config_get_int(cfg, "divergence_free", &div_free)))
      goto fail;
    field.divergence_free = div_free != 0;
    size_t n_params = field.n_params;
    int divergence_free = field.divergence_free;
    if (!res || !res->field) {
      st = nf_fail(NF_EINVAL, "cnf load: the vector field '%s' needs a resolver, and none was "
                   "given", name);
      nf_mark_caller_fault();
      goto fail;
    }
    if (res->field(name, &field, res->user) || !field.f) {
      st = nf_fail(NF_EINVAL, "cnf load: the resolver does not know the vector field '%s'", name);
      nf_mark_caller_fault();
      goto fail;
    }
    if (field.n_params != n_params || (field.divergence_free != 0) != divergence_free) {
      st = nf_fail(NF_EINVAL, "cnf load: the resolver's vector field '%s' has %zu parameters "
                   "and divergence_free %d, the model file says %zu and %d", name,
                   field.n_params, field.divergence_free != 0, n_params, divergence_free);
      nf_mark_caller_fault();
      goto fail;
    }
    field.name = name;
    layer = nf_cnf_field_new(dim, ctx_dim, &field, &o);
  } else {
    st = nf_fail(NF_EFORMAT, "cnf load: config key 'dynamics' is \"%s\", neither \"network\" "
                 "nor \"field\"", dynamics);
    goto fail;
  }
  free(hidden);
  if (!layer) nf_fail_prefixed(nf_last_status(), "cnf load");
  return layer;
fail:
  free(hidden);
  (void)st;
  return NULL;
}
#undef GET_ENUM
