/* lib/trainer.c — minibatch maximum-likelihood training of a flow with Adam:
   minimise the mean NLL -(1/B) sum_i log p(x_i | y_i) over shuffled batches
   (no y for an unconditional flow). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "internal.h"
#include "io/io_internal.h"
#include "io/safetensors.h"
#include "nflow/cnf.h"
#include "nflow/comm.h"
#include "nflow/importance.h"
#include "nflow/meta.h"
#include "nflow/trainer.h"

#define STATE_FORMAT "nflow-trainer-state"
#define STATE_VERSION "1"

struct nf_trainer {
  nf_flow *flow;
  nf_adam *adam;
  const nf_dataset *train;
  const nf_dataset *val; /* may be NULL */
  const nf_dataset *train_ctx, *val_ctx; /* contexts of a conditional flow; NULL until set */
  nf_trainer_opts opts;
  nf_rng rng;
  size_t batch;      /* effective batch size: min(opts.batch_size, train->n) */
  size_t *order;     /* this epoch's permutation of the training rows */
  size_t cursor;     /* position in order of the next batch's first row */
  double *xb;        /* batch x dim gather buffer */
  double *cb;        /* batch x ctx_dim gather buffer (conditional flows only) */
  size_t iterations; /* steps done */
  size_t epochs;     /* epochs completed */
  double epoch_sum;  /* sum over this epoch's steps of batch rows * batch NLL */
  size_t epoch_rows; /* rows seen in this epoch */
  double last_epoch_loss; /* row-weighted mean NLL of the last completed epoch */
  double val_last, val_best;
  size_t val_best_iteration;
  double lr0;        /* the optimizer's learning rate at creation */
  double *theta_next; /* the optimizer's candidate parameters, checked before they are set */
  uint64_t noise_seed; /* step t draws the flow's noise from nf_noise_key(noise_seed, t) */
  int init_pending;    /* the next step starts with nf_flow_init_from_data (see trainer.h) */
  /* best parameters and early stopping */
  double *best_theta;  /* theta at val_best (restore_best only) */
  int have_best;       /* best_theta holds a validated theta */
  double *theta_live;  /* the theta training reached, while the flow holds the restored best */
  int restored;        /* the flow holds best_theta; the next step goes back to theta_live */
  size_t since_best;   /* validations since the last new lowest NLL */
  /* the training curve */
  int continuous;      /* the flow has CNF layers */
  double step_seconds; /* wall time inside nf_trainer_step, over the trainer's life */
  double win_sum;      /* since the last curve point: sum of rows * batch NLL, */
  size_t win_rows, win_steps; /* rows and steps, */
  double win_nfe, win_nfe_adjoint; /* and CNF evaluations of the steps */
  double step_nfe, step_nfe_adjoint; /* CNF evaluations inside steps, over the trainer's life */
  int curve_header;    /* the CSV header has been written */
  size_t val_at;       /* iteration of the latest validation + 1; 0 if none */
  /* divergence of the smoothed batch loss */
  double ema, ema_best; /* the moving average and its lowest value; NaN before a step */
  size_t ema_above;     /* steps in a row with ema above ema_best by the margin */
  int diverged;
  size_t diverged_iteration;
  double diverged_loss, diverged_best;
  /* another objective (opts.objective; objective.h) */
  nf_objective objective;
  int has_objective;
  nf_dataset placeholder; /* the one-row training set of an objective without data */
  nf_flow_ws *ws;        /* the objective's workspace: max(batch, draws) rows */
  double *eps, *log_w;   /* draws x dim standard normals, draws log weights */
  double ess_last;       /* the last step's ESS per sample; NaN without a target */
  double win_ess;        /* sum of the ESS of the steps since the last curve point */
  /* data-parallel training over a communicator (nf_trainer_set_comm) */
  size_t rows;           /* global training rows: order is a permutation of 0..rows-1 */
  size_t val_rows;       /* global validation rows (0: no validation set) */
  nf_rng rng_start;      /* the rng given to nf_trainer_new, before the first shuffle */
  nf_comm comm;          /* the communicator; has_comm = 0 without one */
  int has_comm;
  size_t offset;         /* global index of this rank's first training row */
  uint32_t crc;          /* with a communicator: CRC-32 of the ranks' shard CRCs */
  double *red;           /* reduction buffer: n_params + 2 + size doubles */
  size_t *local;         /* the batch's rows in this rank's shard (batch entries) */
  size_t m_local;        /* how many */
};

static const char *const schedule_names[] = {"constant", "cosine"};

const char *nf_lr_schedule_name(nf_lr_schedule schedule)
{
  return (unsigned)schedule < 2 ? schedule_names[schedule] : "?";
}

nf_status nf_lr_schedule_parse(const char *name, nf_lr_schedule *schedule)
{
  int i = 0;
  nf_status st = nf_parse_choice("learning-rate schedule", name, schedule_names, 2,
                                 schedule ? &i : NULL);
  if (st == NF_OK) *schedule = (nf_lr_schedule)i;
  return st;
}

const char *nf_train_stop_name(nf_train_stop stop)
{
  static const char *const names[] = {"none", "callback", "patience"};
  return (unsigned)stop < 3 ? names[stop] : "?";
}

nf_trainer_opts nf_trainer_defaults(void)
{
  nf_trainer_opts o = {.batch_size = 128, .iterations = 1000, .val_every = 0,
                       .callback = NULL, .user = NULL, .schedule = NF_LR_CONSTANT,
                       .lr_min = 0.0, .restore_best = 0, .patience = 0,
                       .curve_every = 0, .curve = NULL, .curve_user = NULL,
                       .curve_csv = NULL, .state_tag = NULL, .data_init = 1};
  return o;
}

/* Monotonic wall-clock time in seconds. */
static double now_seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* NF_OK if ds is a non-empty set of width dim (the flow's `dim_name`) with
   `rows` rows (0: any number) and finite entries, else the failure in
   nf_errmsg, naming the caller fn and the set `which`. */
static nf_status check_dataset(const char *fn, const char *which, const nf_dataset *ds,
                               const char *dim_name, size_t dim, size_t rows)
{
  if (!ds->x || ds->n == 0 || ds->dim == 0)
    return nf_fail(NF_EINVAL, "%s: %s is empty", fn, which);
  if (ds->dim != dim)
    return nf_fail(NF_EDIM, "%s: %s has dim %zu but the flow's %s is %zu", fn, which,
                   ds->dim, dim_name, dim);
  if (rows && ds->n != rows)
    return nf_fail(NF_EDIM, "%s: %s has %zu rows, not %zu (one per data row)", fn,
                   which, ds->n, rows);
  size_t bad = nf_first_nonfinite(ds->n * ds->dim, ds->x);
  if (bad < ds->n * ds->dim)
    return nf_fail(NF_ENONFINITE, "%s: %s row %zu column %zu is %g", fn, which,
                   bad / ds->dim, bad % ds->dim, ds->x[bad]);
  return NF_OK;
}

/* NF_OK if the arguments of nf_trainer_new fit together, else the reason in nf_errmsg. */
static nf_status check_args(nf_flow *flow, nf_adam *adam, const nf_dataset *train,
                            const nf_dataset *val, const nf_trainer_opts *o)
{
  const char *fn = "nf_trainer_new";
  if (!flow || !adam || !train)
    return nf_fail(NF_EINVAL, "%s: NULL %s", fn,
                   !flow ? "flow" : !adam ? "optimizer" : o->objective ?
                   "training set, and the objective has a data term" : "training set");
  if (nf_adam_size(adam) != nf_flow_n_params(flow))
    return nf_fail(NF_EDIM, "%s: optimizer has %zu parameters but the flow has %zu", fn,
                   nf_adam_size(adam), nf_flow_n_params(flow));
  if (o->batch_size == 0) return nf_fail(NF_EINVAL, "%s: batch_size must be >= 1", fn);
  if (o->anneal_iterations && !(o->objective && o->anneal_beta0 > 0 && o->anneal_beta0 <= 1))
    return nf_fail(NF_EINVAL, "%s: annealing needs an objective and anneal_beta0 in (0, 1] "
                   "(got %g)", fn, o->anneal_beta0);
  if (o->schedule != NF_LR_CONSTANT && o->schedule != NF_LR_COSINE)
    return nf_fail(NF_EINVAL, "%s: unknown learning-rate schedule %d", fn, (int)o->schedule);
  if (o->schedule == NF_LR_COSINE &&
      !(o->lr_min >= 0 && o->lr_min < nf_adam_options(adam).lr))
    return nf_fail(NF_EINVAL, "%s: lr_min %g is not in [0, lr)", fn, o->lr_min);
  nf_status st = o->objective
      ? nf_objective_check(o->objective, nf_flow_dim(flow), nf_flow_ctx_dim(flow)) : NF_OK;
  if (st == NF_OK) st = check_dataset(fn, "training set", train, "dim", nf_flow_dim(flow), 0);
  if (st == NF_OK && val)
    st = check_dataset(fn, "validation set", val, "dim", nf_flow_dim(flow), 0);
  return st;
}

/* The objective's copy, workspace and draw buffers (opts.objective set). */
static nf_status objective_buffers(nf_trainer *tr)
{
  size_t d = nf_flow_dim(tr->flow), draws = tr->opts.batch_size;
  size_t rows = draws > tr->batch ? draws : tr->batch, nd;
  tr->objective = *tr->opts.objective;
  tr->opts.objective = &tr->objective;
  tr->has_objective = 1;
  if (nf_count_doubles("nf_trainer_new", "the draws", draws, d, &nd)) return NF_EINVAL;
  tr->ws = nf_flow_ws_new_threads(tr->flow, rows, tr->opts.threads ? tr->opts.threads : 1);
  tr->eps = nf_dalloc(nd);
  tr->log_w = nf_dalloc(draws);
  if (!tr->ws) return nf_last_status();
  if (!tr->eps || !tr->log_w)
    return nf_fail(NF_ENOMEM, "nf_trainer_new: out of memory for %zu draws", draws);
  return NF_OK;
}

nf_trainer *nf_trainer_new(nf_flow *flow, nf_adam *adam, const nf_dataset *train,
                           const nf_dataset *val, const nf_trainer_opts *opts,
                           const nf_rng *rng)
{
  nf_trainer_opts o = opts ? *opts : nf_trainer_defaults();
  if (!rng) {
    nf_fail(NF_EINVAL, "nf_trainer_new: NULL rng");
    return NULL;
  }
  nf_dataset placeholder = {0};
  int sample_only = o.objective && o.objective->nll_weight == 0 && flow;
  if (sample_only && !train) { /* one zero row: every step is an epoch */
    placeholder = (nf_dataset){.n = 1, .dim = nf_flow_dim(flow),
                               .x = nf_dalloc(nf_flow_dim(flow))};
    if (!placeholder.x) {
      nf_fail(NF_ENOMEM, "nf_trainer_new: out of memory");
      return NULL;
    }
    train = &placeholder;
  }
  if (check_args(flow, adam, train, val, &o) != NF_OK) {
    free(placeholder.x);
    return NULL;
  }
  size_t batch = o.batch_size < train->n ? o.batch_size : train->n;
  size_t c = nf_flow_ctx_dim(flow);
  nf_trainer *tr = calloc(1, sizeof *tr);
  if (!tr) {
    free(placeholder.x);
    nf_fail(NF_ENOMEM, "nf_trainer_new: out of memory");
    return NULL;
  }
  *tr = (nf_trainer){.flow = flow, .adam = adam, .train = train, .val = val,
                     .opts = o, .rng = *rng, .batch = batch,
                     .order = calloc(train->n, sizeof *tr->order),
                     .xb = nf_dalloc(batch * train->dim), .cb = c ? nf_dalloc(batch * c) : NULL,
                     .last_epoch_loss = NAN, .val_last = NAN, .val_best = NAN,
                     .ema = NAN, .ema_best = NAN, .diverged_loss = NAN, .diverged_best = NAN,
                     .lr0 = nf_adam_options(adam).lr,
                     .theta_next = nf_dalloc(nf_flow_n_params(flow)),
                     .theta_live = nf_dalloc(nf_flow_n_params(flow)),
                     .best_theta = o.restore_best ? nf_dalloc(nf_flow_n_params(flow)) : NULL,
                     .placeholder = placeholder, .ess_last = NAN,
                     .rows = train->n, .val_rows = val ? val->n : 0, .rng_start = *rng};
  if (train == &placeholder) tr->train = &tr->placeholder;
  if (!tr->order || !tr->xb || (c && !tr->cb) || !tr->theta_next || !tr->theta_live ||
      (o.restore_best && !tr->best_theta)) {
    nf_trainer_free(tr);
    nf_fail(NF_ENOMEM, "nf_trainer_new: out of memory for a batch of %zu rows", batch);
    return NULL;
  }
  if (nf_flow_set_threads(flow, o.threads ? o.threads : 1) != NF_OK ||
      nf_flow_reserve(flow, batch) != NF_OK || (o.objective && objective_buffers(tr) != NF_OK)) {
    nf_trainer_free(tr);
    return NULL;
  }
  for (size_t i = 0; i < train->n; i++) tr->order[i] = i;
  nf_rng_shuffle(&tr->rng, train->n, tr->order);
  tr->noise_seed = nf_rng_u64(&tr->rng);
  tr->init_pending = o.data_init && nf_flow_params_fresh(flow) && tr->train != &tr->placeholder;
  nf_cnf_counters cnt;
  for (size_t k = 0; k < nf_flow_n_layers(flow); k++)
    if (nf_cnf_get_counters(nf_flow_layer(flow, k), &cnt) == NF_OK) tr->continuous = 1;
  return tr;
}

nf_status nf_trainer_set_context(nf_trainer *trainer, const nf_dataset *train_ctx,
                                 const nf_dataset *val_ctx)
{
  const char *fn = "nf_trainer_set_context";
  if (!trainer || !train_ctx)
    return nf_fail(NF_EINVAL, "%s: NULL %s", fn, !trainer ? "trainer" : "training context");
  size_t c = nf_flow_ctx_dim(trainer->flow);
  if (c == 0)
    return nf_fail(NF_EINVAL, "%s: the flow is unconditional (ctx_dim 0) and takes no "
                   "context", fn);
  if (trainer->val && !val_ctx)
    return nf_fail(NF_EINVAL, "%s: NULL validation context, but the trainer has a "
                   "validation set", fn);
  if (!trainer->val && val_ctx)
    return nf_fail(NF_EINVAL, "%s: a validation context was given, but the trainer has "
                   "no validation set", fn);
  nf_status st = check_dataset(fn, "training context", train_ctx, "ctx_dim", c,
                               trainer->train->n);
  if (st == NF_OK && val_ctx)
    st = check_dataset(fn, "validation context", val_ctx, "ctx_dim", c, trainer->val->n);
  if (st != NF_OK) return st;
  trainer->train_ctx = train_ctx;
  trainer->val_ctx = val_ctx;
  return NF_OK;
}

static uint32_t data_crc(const nf_trainer *tr);

/* Sizes the trainer for the global batch of `rows` global rows and shuffles
   them as nf_trainer_new would have on one process. */
static nf_status resize_global(nf_trainer *tr, size_t rows)
{
  size_t batch = tr->opts.batch_size < rows ? tr->opts.batch_size : rows;
  size_t d = tr->train->dim, c = nf_flow_ctx_dim(tr->flow), np = nf_flow_n_params(tr->flow);
  size_t *order = calloc(rows, sizeof *order), *local = calloc(batch, sizeof *local);
  double *xb = nf_dalloc(batch * d), *cb = c ? nf_dalloc(batch * c) : NULL;
  double *red = nf_dalloc(np + 2 + tr->comm.size);
  if (!order || !local || !xb || (c && !cb) || !red) {
    free(order), free(local), free(xb), free(cb), free(red);
    return nf_fail(NF_ENOMEM, "nf_trainer_set_comm: out of memory for %zu rows", rows);
  }
  free(tr->order), free(tr->local), free(tr->xb), free(tr->cb), free(tr->red);
  tr->order = order, tr->local = local, tr->xb = xb, tr->cb = cb, tr->red = red;
  tr->rows = rows;
  tr->batch = batch;
  for (size_t i = 0; i < rows; i++) tr->order[i] = i;
  tr->rng = tr->rng_start;
  nf_rng_shuffle(&tr->rng, rows, tr->order);
  tr->noise_seed = nf_rng_u64(&tr->rng);
  return nf_flow_reserve(tr->flow, batch);
}

/* NF_OK if the trainer can take a communicator now, else why. */
static nf_status check_comm_use(const nf_trainer *tr)
{
  const char *fn = "nf_trainer_set_comm";
  if (tr->iterations || tr->has_comm)
    return nf_fail(NF_ESTATE, "%s: the trainer has %s", fn,
                   tr->has_comm ? "a communicator already" : "taken steps");
  if (tr->has_objective)
    return nf_fail(NF_EINVAL, "%s: data-parallel training takes maximum likelihood only, "
                   "not another objective", fn);
  return NF_OK;
}

nf_status nf_trainer_set_comm(nf_trainer *trainer, const nf_comm *comm)
{
  nf_status st = nf_comm_check("nf_trainer_set_comm", comm);
  if (st != NF_OK) return st;
  nf_trainer *tr = trainer;
  size_t P = comm->size, r = comm->rank;
  double *v = nf_dalloc(4 * P); /* rows, validation rows and data CRC by rank; statuses */
  st = !tr ? nf_fail(NF_EINVAL, "nf_trainer_set_comm: NULL trainer")
     : !v ? nf_fail(NF_ENOMEM, "nf_trainer_set_comm: out of memory") : check_comm_use(tr);
  double none[1];
  if (!v) v = none; /* still takes part, with its failure */
  if (st == NF_OK) {
    memset(v, 0, 3 * P * sizeof *v);
    v[r] = (double)tr->train->n;
    v[P + r] = (double)tr->val_rows;
    v[2 * P + r] = (double)data_crc(tr);
  }
  st = v == none ? nf_comm_agree(comm, st) : nf_comm_sum_agree(comm, st, v, 3 * P);
  if (st == NF_OK) {
    size_t rows = 0, val = 0, off = 0;
    for (size_t q = 0; q < P; q++) {
      if (q == r) off = rows;
      rows += (size_t)v[q];
      val += (size_t)v[P + q];
    }
    tr->comm = *comm;
    st = nf_comm_agree(comm, resize_global(tr, rows));
    tr->has_comm = st == NF_OK;
    if (tr->has_comm) {
      tr->offset = off, tr->val_rows = val;
      tr->crc = nf_crc32_f64le(0, P, v + 2 * P);
    }
  }
  if (v != none) free(v);
  return st;
}

void nf_trainer_free(nf_trainer *trainer)
{
  if (!trainer) return;
  free(trainer->order);
  free(trainer->xb);
  free(trainer->cb);
  free(trainer->theta_next);
  free(trainer->theta_live);
  free(trainer->best_theta);
  free(trainer->placeholder.x);
  nf_flow_ws_free(trainer->ws);
  free(trainer->eps);
  free(trainer->log_w);
  free(trainer->red);
  free(trainer->local);
  free(trainer);
}

/* NF_ESTATE (reported as fn's) if the flow is conditional and has no context yet. */
static nf_status check_context_set(const char *fn, const nf_trainer *tr)
{
  size_t c = nf_flow_ctx_dim(tr->flow);
  if (c > 0 && !tr->train_ctx)
    return nf_fail(NF_ESTATE, "%s: the flow is conditional (ctx_dim %zu): give its "
                   "context with nf_trainer_set_context first", fn, c);
  return NF_OK;
}

/* dst row k = src row idx[k] for k < m: a gather of m rows of width d. */
static void gather_rows(size_t m, const size_t *idx, size_t d, const double *src,
                        double *dst)
{
  for (size_t k = 0; k < m; k++) memcpy(dst + k * d, src + idx[k] * d, d * sizeof *dst);
}

/* Copies the training rows order[cursor .. cursor + m), and their context
   rows for a conditional flow, into the batch buffers; with a communicator
   only those in this rank's shard, in batch order. Returns the rows gathered. */
static size_t gather_batch(nf_trainer *tr, size_t m)
{
  const size_t *idx = tr->order + tr->cursor;
  if (tr->has_comm) {
    size_t mr = 0;
    for (size_t k = 0; k < m; k++)
      if (idx[k] - tr->offset < tr->train->n) tr->local[mr++] = idx[k] - tr->offset;
    idx = tr->local;
    m = mr;
  }
  gather_rows(m, idx, tr->train->dim, tr->train->x, tr->xb);
  if (tr->train_ctx) gather_rows(m, idx, tr->train_ctx->dim, tr->train_ctx->x, tr->cb);
  return m;
}

/* The whole global batch order[cursor .. cursor + m) on every rank, in
   order: each rank writes its shard's rows into zeroed buffers, which are
   summed (x + 0 is exact). */
static nf_status gather_global(nf_trainer *tr, size_t m)
{
  const size_t *idx = tr->order + tr->cursor;
  size_t d = tr->train->dim, c = tr->train_ctx ? tr->train_ctx->dim : 0;
  memset(tr->xb, 0, m * d * sizeof *tr->xb);
  if (c) memset(tr->cb, 0, m * c * sizeof *tr->cb);
  for (size_t k = 0; k < m; k++) {
    size_t i = idx[k] - tr->offset;
    if (i >= tr->train->n) continue;
    memcpy(tr->xb + k * d, tr->train->x + i * d, d * sizeof *tr->xb);
    if (c) memcpy(tr->cb + k * c, tr->train_ctx->x + i * c, c * sizeof *tr->cb);
  }
  nf_status st = tr->comm.sum(tr->xb, m * d, tr->comm.user);
  if (st == NF_OK && c) st = tr->comm.sum(tr->cb, m * c, tr->comm.user);
  return st;
}

/* Updates the smoothed loss with the batch loss of the step just booked and
   marks divergence (see trainer.h). */
static void track_divergence(nf_trainer *tr, double loss)
{
  double margin = NF_TRAIN_DIVERGE_NATS * (double)nf_flow_dim(tr->flow);
  if (loss > tr->ema_best + 2 * margin) loss = tr->ema_best + 2 * margin; /* one outlier batch */
  tr->ema = isnan(tr->ema) ? loss : tr->ema + NF_TRAIN_EMA_WEIGHT * (loss - tr->ema);
  if (!(tr->ema >= tr->ema_best)) tr->ema_best = tr->ema; /* also while ema_best is NaN */
  tr->ema_above = tr->ema > tr->ema_best + margin ? tr->ema_above + 1 : 0;
  if (!tr->diverged && tr->ema_above >= NF_TRAIN_DIVERGE_STEPS) {
    tr->diverged = 1;
    tr->diverged_iteration = tr->iterations;
    tr->diverged_loss = tr->ema;
    tr->diverged_best = tr->ema_best;
  }
}

/* Books a finished step of m rows with batch NLL loss; closes and reshuffles
   the epoch when every row has been visited. */
static void record_step(nf_trainer *tr, size_t m, double loss)
{
  tr->iterations++;
  track_divergence(tr, loss);
  tr->cursor += m;
  tr->epoch_sum += (double)m * loss;
  tr->epoch_rows += m;
  tr->win_sum += (double)m * loss;
  tr->win_rows += m;
  tr->win_steps++;
  if (tr->cursor < tr->rows) return;
  tr->epochs++;
  tr->last_epoch_loss = tr->epoch_sum / (double)tr->epoch_rows;
  tr->epoch_sum = 0.0;
  tr->epoch_rows = 0;
  tr->cursor = 0;
  nf_rng_shuffle(&tr->rng, tr->rows, tr->order);
}

/* Cosine annealing: lr_min + (lr0 - lr_min)(1 + cos(pi t / T)) / 2 at step t
   (> 0 for t < T); held at the last value past T. */
static double scheduled_lr(const nf_trainer *tr)
{
  size_t T = tr->opts.iterations ? tr->opts.iterations : 1;
  size_t t = tr->iterations < T ? tr->iterations : T - 1;
  const double pi = 3.14159265358979323846;
  return tr->opts.lr_min + 0.5 * (tr->lr0 - tr->opts.lr_min) * (1.0 + cos(pi * (double)t / (double)T));
}

/* Sums the CNF layers' forward and adjoint evaluation counters into *nfe, *adj. */
static void cnf_evaluations(const nf_flow *flow, double *nfe, double *adj)
{
  *nfe = *adj = 0.0;
  nf_cnf_counters c;
  for (size_t k = 0; k < nf_flow_n_layers(flow); k++)
    if (nf_cnf_get_counters(nf_flow_layer(flow, k), &c) == NF_OK) {
      *nfe += (double)c.nfe;
      *adj += (double)c.nfe_adjoint;
    }
}

static nf_status step(nf_trainer *tr, double *loss);
static nf_status optimizer_step(nf_trainer *tr, size_t m, size_t np, double *loss);

nf_status nf_trainer_step(nf_trainer *trainer, double *loss)
{
  if (!trainer) return nf_fail(NF_EINVAL, "nf_trainer_step: NULL trainer");
  nf_trainer *tr = trainer;
  if (tr->restored) { /* training goes on from where it was, not from the best */
    nf_status st = nf_flow_set_params(tr->flow, tr->theta_live);
    if (st != NF_OK) return st;
    tr->restored = 0;
  }
  double nfe0 = 0, adj0 = 0, nfe1, adj1, t0 = now_seconds(), nll = NAN;
  if (tr->continuous) cnf_evaluations(tr->flow, &nfe0, &adj0);
  nf_status st = step(tr, &nll);
  tr->step_seconds += now_seconds() - t0;
  if (st != NF_OK) return st;
  if (tr->continuous) {
    cnf_evaluations(tr->flow, &nfe1, &adj1);
    tr->win_nfe += nfe1 - nfe0;
    tr->win_nfe_adjoint += adj1 - adj0;
    tr->step_nfe += nfe1 - nfe0;
    tr->step_nfe_adjoint += adj1 - adj0;
  }
  if (loss) *loss = nll;
  return NF_OK;
}

/* nf_trainer_step's work: one batch, gradient and optimizer step. */
static nf_status step(nf_trainer *tr, double *loss)
{
  if (nf_flow_n_params(tr->flow) != nf_adam_size(tr->adam))
    return nf_fail(NF_EDIM, "nf_trainer_step: the flow now has %zu parameters, the "
                   "optimizer %zu", nf_flow_n_params(tr->flow), nf_adam_size(tr->adam));
  nf_status st = check_context_set("nf_trainer_step", tr);
  if (st != NF_OK) return st;
  size_t rest = tr->rows - tr->cursor;
  size_t m = rest < tr->batch ? rest : tr->batch;
  if (tr->init_pending && tr->has_comm) st = gather_global(tr, m); /* every rank initialises alike */
  else tr->m_local = gather_batch(tr, m);
  if (st != NF_OK) return st;
  nf_flow_set_seed(tr->flow, tr->noise_seed + tr->iterations);
  size_t np = nf_flow_n_params(tr->flow);
  if (tr->init_pending) { /* theta_live keeps the fresh theta in case the step fails */
    memcpy(tr->theta_live, nf_flow_params(tr->flow), np * sizeof *tr->theta_live);
    st = nf_flow_init_from_data(tr->flow, m, tr->xb, tr->train_ctx ? tr->cb : NULL);
    if (st != NF_OK) return nf_fail_prefixed(st, "nf_trainer_step: data-dependent initialisation");
    if (tr->has_comm) tr->m_local = gather_batch(tr, m);
  }
  st = optimizer_step(tr, m, np, loss);
  if (st != NF_OK && tr->init_pending)
    nf_flow_set_params(tr->flow, tr->theta_live); /* the fresh theta back: checked before */
  if (st == NF_OK) tr->init_pending = 0;
  return st;
}

/* The objective's estimate *loss at fresh draws and m training rows, its
   gradient into the flow's, and the draws' ESS when there is a target. */
static nf_status objective_gradient(nf_trainer *tr, size_t m, double *loss)
{
  const nf_objective *o = &tr->objective;
  size_t draws = nf_objective_samples(o) ? tr->opts.batch_size : 0;
  nf_rng_normal_fill(&tr->rng, draws * nf_flow_dim(tr->flow), tr->eps);
  int weighted = o->reverse_kl_weight != 0;
  size_t K = tr->opts.anneal_iterations, t = tr->iterations;
  if (K) tr->objective.beta = t < K ? tr->opts.anneal_beta0 + (1.0 - tr->opts.anneal_beta0) *
                                          (double)t / (double)K : 1.0;
  nf_status st = nf_objective_grad_ws(o, tr->flow, tr->ws, nf_flow_seed(tr->flow), draws,
                                      tr->eps, o->nll_weight != 0 ? m : 0, tr->xb,
                                      tr->train_ctx ? tr->cb : NULL, loss, nf_flow_grad(tr->flow),
                                      weighted ? tr->log_w : NULL, NULL);
  nf_importance imp = {0, NAN, NAN, NAN};
  if (st == NF_OK && weighted && draws >= 2) nf_importance_summary(draws, tr->log_w, &imp);
  if (st == NF_OK) tr->ess_last = imp.ess;
  return st;
}

/* NF_ENONFINITE for a non-finite batch NLL (this rank's rows with a communicator). */
static nf_status nonfinite_loss(const nf_trainer *tr, double nll)
{
  char rank[48] = "";
  if (tr->has_comm) snprintf(rank, sizeof rank, " (rank %zu's rows)", tr->comm.rank);
  return nf_fail(NF_ENONFINITE, "nf_trainer_step: batch NLL is %g at iteration %zu%s", nll,
                 tr->iterations + 1, rank);
}

/* The global batch's mean NLL *nll and its gradient (into the flow's) over m
   rows: each rank's NLL and gradient of its m_local rows, weighted by m_local,
   summed over the ranks with the ranks' statuses, divided by m. */
static nf_status global_gradient(nf_trainer *tr, size_t m, size_t np, double *nll)
{
  size_t mr = tr->m_local;
  double loss = 0.0, *v = tr->red, *g = nf_flow_grad(tr->flow);
  nf_status st = mr ? nf_flow_nll_grad(tr->flow, mr, tr->xb, tr->train_ctx ? tr->cb : NULL,
                                       &loss) : NF_OK;
  if (st == NF_OK && !isfinite(loss)) st = nonfinite_loss(tr, loss);
  for (size_t i = 0; i < np; i++) v[i] = mr ? (double)mr * g[i] : 0.0;
  v[np] = (double)mr * loss;
  st = nf_comm_sum_agree(&tr->comm, st, v, np + 1);
  if (st != NF_OK) return st;
  for (size_t i = 0; i < np; i++) g[i] = v[i] / (double)m;
  *nll = v[np] / (double)m;
  return NF_OK;
}

/* The global mean *v of the ranks' means *v over their n rows (agreeing on st). */
static nf_status global_mean(nf_trainer *tr, nf_status st, size_t n, double *v)
{
  double *r = tr->red;
  r[0] = n ? (double)n * *v : 0.0;
  r[1] = (double)n;
  st = nf_comm_sum_agree(&tr->comm, st, r, 2);
  if (st == NF_OK) *v = r[0] / r[1];
  return st;
}

/* The gradient of the batch's mean NLL and one optimizer step, written through
   nf_flow_set_params; the parameters are untouched on failure. */
static nf_status optimizer_step(nf_trainer *tr, size_t m, size_t np, double *loss)
{
  double nll;
  nf_status st = tr->has_comm ? global_gradient(tr, m, np, &nll)
      : tr->has_objective ? objective_gradient(tr, m, &nll)
      : nf_flow_nll_grad(tr->flow, m, tr->xb, tr->train_ctx ? tr->cb : NULL, &nll);
  if (st == NF_OK && !isfinite(nll)) st = nonfinite_loss(tr, nll);
  if (st != NF_OK) return st;
  if (tr->opts.schedule == NF_LR_COSINE) nf_adam_set_lr(tr->adam, scheduled_lr(tr));
  memcpy(tr->theta_next, nf_flow_params(tr->flow), np * sizeof *tr->theta_next);
  st = nf_adam_step(tr->adam, tr->theta_next, nf_flow_grad(tr->flow));
  if (st == NF_OK) st = nf_flow_set_params(tr->flow, tr->theta_next);
  if (st != NF_OK)
    return nf_fail_prefixed(st, "nf_trainer_step: the optimizer step was refused");
  record_step(tr, m, nll);
  tr->win_ess += tr->ess_last;
  if (loss) *loss = nll;
  return NF_OK;
}

nf_status nf_trainer_validate(nf_trainer *trainer, double *nll)
{
  if (!trainer) return nf_fail(NF_EINVAL, "nf_trainer_validate: NULL trainer");
  if (!trainer->val_rows)
    return nf_fail(NF_EINVAL, "nf_trainer_validate: the trainer has no validation set");
  nf_status st = check_context_set("nf_trainer_validate", trainer);
  double v = NAN;
  if (st == NF_OK && trainer->val)
    st = nf_flow_nll(trainer->flow, trainer->val->n, trainer->val->x,
                     trainer->val_ctx ? trainer->val_ctx->x : NULL, &v);
  if (trainer->has_comm) st = global_mean(trainer, st, trainer->val ? trainer->val->n : 0, &v);
  if (st != NF_OK) return st;
  trainer->val_last = v;
  trainer->val_at = trainer->iterations + 1;
  if (!isnan(v) && !(v >= trainer->val_best)) { /* also true while val_best is NaN */
    trainer->val_best = v;
    trainer->val_best_iteration = trainer->iterations;
    trainer->since_best = 0;
    if (trainer->best_theta) {
      memcpy(trainer->best_theta, nf_flow_params(trainer->flow),
             nf_flow_n_params(trainer->flow) * sizeof *trainer->best_theta);
      trainer->have_best = 1;
    }
  } else {
    trainer->since_best++;
  }
  if (nll) *nll = v;
  return NF_OK;
}

/* Whether a validation is due after the current step of a run. */
static int validation_due(const nf_trainer *tr)
{
  size_t k = tr->opts.val_every;
  if (!tr->val_rows || k == 0) return 0;
  return tr->iterations % k == 0 || tr->iterations == tr->opts.iterations;
}

/* Where a run began: its wall time, and the trainer's step time and step
   evaluations then (a report gives the run's share of each). */
typedef struct run_start {
  double t0, step_seconds, step_nfe, step_nfe_adjoint;
} run_start;

/* The summary of the trainer's state after a run that began at `start`. */
static nf_train_report make_report(const nf_trainer *tr, nf_train_stop stop,
                                   const run_start *start)
{
  double partial = tr->epoch_rows ? tr->epoch_sum / (double)tr->epoch_rows : NAN;
  nf_train_report r = {.iterations = tr->iterations, .epochs = tr->epochs,
                       .stopped = stop != NF_STOP_NONE, .stop = stop,
                       .restored_iteration = tr->have_best ? tr->val_best_iteration : 0,
                       .train_loss = tr->epochs ? tr->last_epoch_loss : partial,
                       .val_nll_last = tr->val_last, .val_nll_best = tr->val_best,
                       .val_best_iteration = tr->val_best_iteration,
                       .seconds = now_seconds() - start->t0,
                       .step_seconds = tr->step_seconds - start->step_seconds,
                       .step_nfe = tr->step_nfe - start->step_nfe,
                       .step_nfe_adjoint = tr->step_nfe_adjoint - start->step_nfe_adjoint,
                       .loss_smoothed = tr->ema, .loss_smoothed_best = tr->ema_best,
                       .diverged = tr->diverged, .diverged_iteration = tr->diverged_iteration,
                       .diverged_loss = tr->diverged_loss, .diverged_best = tr->diverged_best,
                       .ess_last = tr->ess_last};
  if (stop == NF_STOP_CALLBACK)
    snprintf(r.stop_reason, sizeof r.stop_reason, "the callback asked to stop at iteration %zu",
             tr->iterations);
  else if (stop == NF_STOP_PATIENCE)
    snprintf(r.stop_reason, sizeof r.stop_reason,
             "no lower validation NLL in %zu validations (best %.6g at iteration %zu)",
             tr->since_best, tr->val_best, tr->val_best_iteration);
  return r;
}

/* Records a curve point of the steps since the last one (validating first if
   there is a validation set and no validation at this iteration yet); *stop
   is set if the curve callback asks to stop. */
static nf_status curve_point(nf_trainer *tr, int *stop)
{
  nf_status st = NF_OK;
  if (tr->val_rows && tr->val_at != tr->iterations + 1) st = nf_trainer_validate(tr, NULL);
  if (st != NF_OK) return st;
  double k = tr->win_steps ? (double)tr->win_steps : 1.0;
  nf_train_curve_point p = {.iteration = tr->iterations, .seconds = tr->step_seconds,
                            .train_loss = tr->win_rows ? tr->win_sum / (double)tr->win_rows : NAN,
                            .val_loss = tr->val_rows ? tr->val_last : NAN,
                            .continuous = tr->continuous,
                            .nfe_forward = tr->continuous ? tr->win_nfe / k : NAN,
                            .nfe_backward = tr->continuous ? tr->win_nfe_adjoint / k : NAN,
                            .ess = tr->win_ess / k};
  int with_ess = tr->has_objective && tr->objective.reverse_kl_weight != 0;
  tr->win_sum = tr->win_nfe = tr->win_nfe_adjoint = tr->win_ess = 0.0;
  tr->win_rows = tr->win_steps = 0;
  FILE *f = tr->opts.curve_csv;
  if (f) {
    if (!tr->curve_header)
      fprintf(f, "iter,seconds,train_loss,val_loss%s%s\n",
              tr->continuous ? ",nfe_forward,nfe_backward" : "", with_ess ? ",ess" : "");
    tr->curve_header = 1;
    fprintf(f, "%zu,%.6f,%.17g,%.17g", p.iteration, p.seconds, p.train_loss, p.val_loss);
    if (p.continuous) fprintf(f, ",%.6g,%.6g", p.nfe_forward, p.nfe_backward);
    if (with_ess) fprintf(f, ",%.6g", p.ess);
    fputc('\n', f);
    fflush(f);
  }
  if (tr->opts.curve && tr->opts.curve(&p, tr->opts.curve_user)) *stop = 1;
  return NF_OK;
}

nf_status nf_trainer_run(nf_trainer *trainer, nf_train_report *report)
{
  if (!trainer) return nf_fail(NF_EINVAL, "nf_trainer_run: NULL trainer");
  nf_trainer *tr = trainer;
  double t0 = now_seconds();
  run_start start = {t0, tr->step_seconds, tr->step_nfe, tr->step_nfe_adjoint};
  nf_status st = NF_OK;
  nf_train_stop stop = NF_STOP_NONE;
  size_t K = tr->opts.curve_every;
  while (tr->iterations < tr->opts.iterations && st == NF_OK && stop == NF_STOP_NONE) {
    double loss;
    st = nf_trainer_step(tr, &loss);
    if (st != NF_OK) break;
    if (validation_due(tr)) st = nf_trainer_validate(tr, NULL);
    int asked = 0;
    if (st == NF_OK && K && (tr->iterations % K == 0 || tr->iterations == tr->opts.iterations))
      st = curve_point(tr, &asked);
    if (st != NF_OK) break;
    if (asked) stop = NF_STOP_CALLBACK;
    if (tr->opts.patience && tr->val_at == tr->iterations + 1 &&
        tr->since_best >= tr->opts.patience)
      stop = NF_STOP_PATIENCE;
    if (tr->opts.callback) {
      nf_train_progress p = {.iteration = tr->iterations, .total = tr->opts.iterations,
                             .epoch = tr->epochs, .loss = loss, .val_nll = tr->val_last,
                             .seconds = now_seconds() - t0,
                             .loss_smoothed = tr->ema, .diverged = tr->diverged,
                             .ess = tr->ess_last};
      if (tr->opts.callback(&p, tr->opts.user) && stop == NF_STOP_NONE) stop = NF_STOP_CALLBACK;
    }
  }
  int asked = 0;
  if (st == NF_OK && K && tr->win_steps) st = curve_point(tr, &asked); /* an early stop's point */
  if (st == NF_OK && tr->have_best && tr->val_best_iteration != tr->iterations && !tr->restored) {
    size_t np = nf_flow_n_params(tr->flow);
    memcpy(tr->theta_live, nf_flow_params(tr->flow), np * sizeof *tr->theta_live);
    st = nf_flow_set_params(tr->flow, tr->best_theta);
    tr->restored = st == NF_OK;
  }
  if (report) *report = make_report(tr, stop, &start);
  return st;
}

size_t nf_trainer_iterations(const nf_trainer *trainer)
{
  return trainer ? trainer->iterations : 0;
}

/* ---- whole-state checkpoints ---- */

/* CRC-32 of the training rows (and their contexts): a resumed run must see the same data. */
static uint32_t data_crc(const nf_trainer *tr)
{
  if (tr->has_comm) return tr->crc;
  uint32_t crc = nf_crc32_f64le(0, tr->train->n * tr->train->dim, tr->train->x);
  if (tr->train_ctx) crc = nf_crc32_f64le(crc, tr->train_ctx->n * tr->train_ctx->dim,
                                          tr->train_ctx->x);
  return crc;
}

static uint64_t f64_bits(double v)
{
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

/* Sets key to u in decimal (hex = 0) or as 16 hex digits (hex = 1). */
static nf_status put_u64(nf_meta *m, const char *key, uint64_t u, int hex)
{
  char buf[32];
  snprintf(buf, sizeof buf, hex ? "%016" PRIx64 : "%" PRIu64, u);
  return nf_meta_set(m, key, buf);
}

/* The scalars of the state as metadata strings (doubles as their bits in hex). */
static nf_status state_meta(const nf_trainer *tr, nf_meta *m)
{
  struct { const char *key; uint64_t v; int hex; } kv[] = {
    {"n_params", nf_flow_n_params(tr->flow), 0}, {"ctx_dim", nf_flow_ctx_dim(tr->flow), 0},
    {"train_rows", tr->rows, 0}, {"dim", tr->train->dim, 0},
    {"val_rows", tr->val_rows, 0}, {"data_crc32", data_crc(tr), 1},
    {"iterations", tr->iterations, 0}, {"epochs", tr->epochs, 0},
    {"cursor", tr->cursor, 0}, {"epoch_rows", tr->epoch_rows, 0},
    {"epoch_sum", f64_bits(tr->epoch_sum), 1},
    {"last_epoch_loss", f64_bits(tr->last_epoch_loss), 1},
    {"val_last", f64_bits(tr->val_last), 1}, {"val_best", f64_bits(tr->val_best), 1},
    {"val_best_iteration", tr->val_best_iteration, 0}, {"since_best", tr->since_best, 0},
    {"have_best", (uint64_t)tr->have_best, 0},
    {"rng0", tr->rng.s[0], 1}, {"rng1", tr->rng.s[1], 1},
    {"rng2", tr->rng.s[2], 1}, {"rng3", tr->rng.s[3], 1},
    {"noise_seed", tr->noise_seed, 1}, {"adam_steps", nf_adam_steps(tr->adam), 0},
    {"step_seconds", f64_bits(tr->step_seconds), 1},
    {"win_sum", f64_bits(tr->win_sum), 1}, {"win_rows", tr->win_rows, 0},
    {"win_steps", tr->win_steps, 0}, {"win_nfe", f64_bits(tr->win_nfe), 1},
    {"win_nfe_adjoint", f64_bits(tr->win_nfe_adjoint), 1},
    {"ema", f64_bits(tr->ema), 1}, {"ema_best", f64_bits(tr->ema_best), 1},
    {"ema_above", tr->ema_above, 0}, {"diverged", (uint64_t)tr->diverged, 0},
    {"diverged_iteration", tr->diverged_iteration, 0},
    {"diverged_loss", f64_bits(tr->diverged_loss), 1},
    {"diverged_best", f64_bits(tr->diverged_best), 1},
    {"win_ess", f64_bits(tr->win_ess), 1}, {"ess_last", f64_bits(tr->ess_last), 1},
  };
  nf_status st = nf_meta_set(m, "format", STATE_FORMAT);
  if (st == NF_OK) st = nf_meta_set(m, "version", STATE_VERSION);
  if (st == NF_OK && tr->opts.state_tag) st = nf_meta_set(m, "tag", tr->opts.state_tag);
  for (size_t i = 0; st == NF_OK && i < sizeof kv / sizeof *kv; i++)
    st = put_u64(m, kv[i].key, kv[i].v, kv[i].hex);
  return st;
}

nf_status nf_trainer_save_state(const nf_trainer *trainer, const char *path)
{
  const char *fn = "nf_trainer_save_state";
  if (!trainer || !path)
    return nf_fail(NF_EINVAL, "%s: NULL %s", fn, !trainer ? "trainer" : "path");
  const nf_trainer *tr = trainer;
  size_t np = nf_flow_n_params(tr->flow), n = tr->rows;
  double *buf = nf_dalloc(2 * np + n); /* np x 8 and n x dim x 8 bytes fit: no overflow */
  nf_meta *m = nf_meta_new();
  nf_status st = buf && m ? NF_OK : nf_fail(NF_ENOMEM, "%s: out of memory", fn);
  if (st == NF_OK) st = state_meta(tr, m);
  if (st == NF_OK) {
    double *mom = buf, *vel = buf + np, *order = buf + 2 * np;
    nf_adam_get_state(tr->adam, mom, vel);
    for (size_t i = 0; i < n; i++) order[i] = (double)tr->order[i];
    nf_tensor t[5] = {
      {"theta", np, tr->restored ? tr->theta_live : nf_flow_params(tr->flow)},
      {"adam.m", np, mom}, {"adam.v", np, vel}, {"order", n, order},
      {"best_theta", np, tr->best_theta}};
    st = nf_safetensors_write(path, m, tr->have_best ? 5 : 4, t);
  }
  nf_meta_free(m);
  free(buf);
  return st;
}

/* The metadata value of key as an unsigned integer (decimal, or 16 hex digits). */
static nf_status get_u64(const nf_meta *m, const char *path, const char *key, int hex,
                         uint64_t *out)
{
  const char *s = nf_meta_get(m, key);
  char *end = NULL;
  if (s && *s && *s != '-') {
    errno = 0;
    unsigned long long v = strtoull(s, &end, hex ? 16 : 10);
    if (!errno && !*end && (!hex || strlen(s) == 16)) {
      *out = (uint64_t)v;
      return NF_OK;
    }
  }
  return nf_fail(NF_EFORMAT, "%s: trainer state: metadata '%s' is %s", path, key,
                 s ? "malformed" : "missing");
}

/* A tensor of the state file of exactly n values. */
static nf_status get_tensor(const nf_safetensors *f, const char *path, const char *name,
                            size_t n, const double **out)
{
  size_t len = 0;
  *out = nf_safetensors_find(f, name, &len);
  if (!*out) return nf_fail(NF_EFORMAT, "%s: trainer state: no tensor '%s'", path, name);
  if (len != n)
    return nf_fail(NF_EFORMAT, "%s: trainer state: tensor '%s' has %zu values, not %zu",
                   path, name, len, n);
  return NF_OK;
}

/* Every scalar of a state file, read. */
typedef struct state_scalars {
  uint64_t n_params, ctx_dim, train_rows, dim, val_rows, crc, iterations, epochs, cursor,
      epoch_rows, epoch_sum, last_epoch_loss, val_last, val_best, val_best_iteration,
      since_best, have_best, rng[4], noise_seed, adam_steps, step_seconds, win_sum,
      win_rows, win_steps, win_nfe, win_nfe_adjoint;
  /* optional (states saved before divergence tracking lack them: it restarts) */
  uint64_t ema, ema_best, ema_above, diverged, diverged_iteration, diverged_loss,
      diverged_best;
  /* optional (states saved before objectives lack them) */
  uint64_t win_ess, ess_last;
} state_scalars;

static double bits_f64(uint64_t u)
{
  double v;
  memcpy(&v, &u, sizeof v);
  return v;
}

/* Reads the scalars of the state file and checks they fit tr. */
static nf_status read_scalars(const nf_trainer *tr, const nf_meta *m, const char *path,
                              state_scalars *s)
{
  const char *fmt = nf_meta_get(m, "format"), *ver = nf_meta_get(m, "version");
  if (!fmt || strcmp(fmt, STATE_FORMAT))
    return nf_fail(NF_EFORMAT, "%s: not a trainer state (format '%s', expected '%s')", path,
                   fmt ? fmt : "", STATE_FORMAT);
  if (!ver || strcmp(ver, STATE_VERSION))
    return nf_fail(NF_EFORMAT, "%s: trainer state version '%s', this library reads %s", path,
                   ver ? ver : "", STATE_VERSION);
  struct { const char *key; uint64_t *v; int hex; } kv[] = {
    {"n_params", &s->n_params, 0}, {"ctx_dim", &s->ctx_dim, 0},
    {"train_rows", &s->train_rows, 0}, {"dim", &s->dim, 0}, {"val_rows", &s->val_rows, 0},
    {"data_crc32", &s->crc, 1}, {"iterations", &s->iterations, 0}, {"epochs", &s->epochs, 0},
    {"cursor", &s->cursor, 0}, {"epoch_rows", &s->epoch_rows, 0},
    {"epoch_sum", &s->epoch_sum, 1}, {"last_epoch_loss", &s->last_epoch_loss, 1},
    {"val_last", &s->val_last, 1}, {"val_best", &s->val_best, 1},
    {"val_best_iteration", &s->val_best_iteration, 0}, {"since_best", &s->since_best, 0},
    {"have_best", &s->have_best, 0}, {"rng0", &s->rng[0], 1}, {"rng1", &s->rng[1], 1},
    {"rng2", &s->rng[2], 1}, {"rng3", &s->rng[3], 1}, {"noise_seed", &s->noise_seed, 1},
    {"adam_steps", &s->adam_steps, 0}, {"step_seconds", &s->step_seconds, 1},
    {"win_sum", &s->win_sum, 1}, {"win_rows", &s->win_rows, 0},
    {"win_steps", &s->win_steps, 0}, {"win_nfe", &s->win_nfe, 1},
    {"win_nfe_adjoint", &s->win_nfe_adjoint, 1},
  };
  for (size_t i = 0; i < sizeof kv / sizeof *kv; i++) {
    nf_status st = get_u64(m, path, kv[i].key, kv[i].hex, kv[i].v);
    if (st != NF_OK) return st;
  }
  struct { const char *key; uint64_t *v; int hex; uint64_t absent; } opt[] = {
    {"ema", &s->ema, 1, f64_bits(NAN)}, {"ema_best", &s->ema_best, 1, f64_bits(NAN)},
    {"ema_above", &s->ema_above, 0, 0}, {"diverged", &s->diverged, 0, 0},
    {"diverged_iteration", &s->diverged_iteration, 0, 0},
    {"diverged_loss", &s->diverged_loss, 1, f64_bits(NAN)},
    {"diverged_best", &s->diverged_best, 1, f64_bits(NAN)},
    {"win_ess", &s->win_ess, 1, f64_bits(0.0)}, {"ess_last", &s->ess_last, 1, f64_bits(NAN)},
  };
  for (size_t i = 0; i < sizeof opt / sizeof *opt; i++) {
    *opt[i].v = opt[i].absent;
    nf_status st = nf_meta_get(m, opt[i].key) ? get_u64(m, path, opt[i].key, opt[i].hex, opt[i].v)
                                              : NF_OK;
    if (st != NF_OK) return st;
  }
  struct { const char *what; uint64_t saved, here; } fit[] = {
    {"parameters", s->n_params, nf_flow_n_params(tr->flow)},
    {"context columns", s->ctx_dim, nf_flow_ctx_dim(tr->flow)},
    {"training rows", s->train_rows, tr->rows},
    {"data columns", s->dim, tr->train->dim},
    {"validation rows", s->val_rows, tr->val_rows},
  };
  for (size_t i = 0; i < sizeof fit / sizeof *fit; i++)
    if (fit[i].saved != fit[i].here)
      return nf_fail(NF_EDIM, "%s: the state was saved with %" PRIu64 " %s, this trainer "
                     "has %" PRIu64, path, fit[i].saved, fit[i].what, fit[i].here);
  if (s->crc != data_crc(tr))
    return nf_fail(NF_EDIM, "%s: the state was saved with other training data (CRC-32 "
                   "%08" PRIx64 ", this trainer's %08" PRIx32 ")", path, s->crc, data_crc(tr));
  const char *tag = nf_meta_get(m, "tag"), *mine = tr->opts.state_tag;
  tag = tag ? tag : "";
  mine = mine ? mine : "";
  if (strcmp(tag, mine)) { /* name the first space-separated word that differs */
    size_t i = 0;
    while (tag[i] && tag[i] == mine[i]) i++;
    while (i > 0 && tag[i - 1] != ' ') i--;
    int a = (int)strcspn(tag + i, " "), b = (int)strcspn(mine + i, " ");
    return nf_fail(NF_EDIM, "%s: the state was saved by a run with '%.*s', this trainer's tag "
                   "has '%.*s'", path, a, tag + i, b, mine + i);
  }
  if (s->cursor >= s->train_rows || s->epoch_rows > s->iterations * s->train_rows ||
      s->have_best > 1 || s->diverged > 1)
    return nf_fail(NF_EFORMAT, "%s: trainer state: inconsistent counters", path);
  return NF_OK;
}

/* The order tensor as row indices into idx; NF_EFORMAT unless a permutation of 0..n-1. */
static nf_status read_order(const double *v, size_t n, const char *path, size_t *idx)
{
  unsigned char *seen = calloc(n, 1);
  if (!seen) return nf_fail(NF_ENOMEM, "nf_trainer_load_state: out of memory");
  nf_status st = NF_OK;
  for (size_t i = 0; i < n && st == NF_OK; i++) {
    if (!(v[i] >= 0 && v[i] < (double)n && v[i] == floor(v[i])) || seen[(size_t)v[i]])
      st = nf_fail(NF_EFORMAT, "%s: trainer state: 'order' is not a permutation of the "
                   "training rows (entry %zu)", path, i);
    else
      seen[idx[i] = (size_t)v[i]] = 1;
  }
  free(seen);
  return st;
}

nf_status nf_trainer_load_state(nf_trainer *trainer, const char *path)
{
  const char *fn = "nf_trainer_load_state";
  if (!trainer || !path)
    return nf_fail(NF_EINVAL, "%s: NULL %s", fn, !trainer ? "trainer" : "path");
  nf_trainer *tr = trainer;
  nf_safetensors *f = NULL;
  nf_status st = nf_safetensors_read(path, &f);
  if (st != NF_OK) return st;
  state_scalars s;
  size_t np = nf_flow_n_params(tr->flow), n = tr->rows;
  const double *theta = NULL, *mom = NULL, *vel = NULL, *order = NULL, *best = NULL;
  size_t *idx = malloc(n * sizeof *idx);
  if (!idx) st = nf_fail(NF_ENOMEM, "%s: out of memory", fn);
  if (st == NF_OK) st = read_scalars(tr, nf_safetensors_meta(f), path, &s);
  if (st == NF_OK) st = get_tensor(f, path, "theta", np, &theta);
  if (st == NF_OK) st = get_tensor(f, path, "adam.m", np, &mom);
  if (st == NF_OK) st = get_tensor(f, path, "adam.v", np, &vel);
  if (st == NF_OK) st = get_tensor(f, path, "order", n, &order);
  if (st == NF_OK && s.have_best) st = get_tensor(f, path, "best_theta", np, &best);
  if (st == NF_OK) st = read_order(order, n, path, idx);
  if (st == NF_OK) st = nf_flow_check_params(tr->flow, theta);
  if (st == NF_OK && best && tr->best_theta) st = nf_flow_check_params(tr->flow, best);
  if (st == NF_OK) st = nf_adam_set_state(tr->adam, (size_t)s.adam_steps, mom, vel);
  if (st == NF_OK) st = nf_flow_set_params(tr->flow, theta); /* checked: cannot fail */
  if (st != NF_OK) {
    free(idx);
    nf_safetensors_free(f);
    return nf_fail_prefixed(st, "nf_trainer_load_state");
  }
  memcpy(tr->order, idx, n * sizeof *idx);
  for (int i = 0; i < 4; i++) tr->rng.s[i] = s.rng[i];
  tr->noise_seed = s.noise_seed;
  tr->init_pending = 0; /* a resume never re-initialises */
  tr->iterations = (size_t)s.iterations;
  tr->epochs = (size_t)s.epochs;
  tr->cursor = (size_t)s.cursor;
  tr->epoch_rows = (size_t)s.epoch_rows;
  tr->epoch_sum = bits_f64(s.epoch_sum);
  tr->last_epoch_loss = bits_f64(s.last_epoch_loss);
  tr->val_last = bits_f64(s.val_last);
  tr->val_best = bits_f64(s.val_best);
  tr->val_best_iteration = (size_t)s.val_best_iteration;
  tr->since_best = (size_t)s.since_best;
  tr->have_best = best && tr->best_theta;
  if (tr->have_best) memcpy(tr->best_theta, best, np * sizeof *best);
  tr->restored = 0;
  tr->step_seconds = bits_f64(s.step_seconds);
  tr->win_sum = bits_f64(s.win_sum);
  tr->win_rows = (size_t)s.win_rows;
  tr->win_steps = (size_t)s.win_steps;
  tr->win_nfe = bits_f64(s.win_nfe);
  tr->win_nfe_adjoint = bits_f64(s.win_nfe_adjoint);
  tr->val_at = 0;
  tr->ema = bits_f64(s.ema);
  tr->ema_best = bits_f64(s.ema_best);
  tr->win_ess = bits_f64(s.win_ess);
  tr->ess_last = bits_f64(s.ess_last);
  tr->ema_above = (size_t)s.ema_above;
  tr->diverged = (int)s.diverged;
  tr->diverged_iteration = (size_t)s.diverged_iteration;
  tr->diverged_loss = bits_f64(s.diverged_loss);
  tr->diverged_best = bits_f64(s.diverged_best);
  free(idx);
  nf_safetensors_free(f);
  return NF_OK;
}
