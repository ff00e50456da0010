/* lib/trainer.c — minibatch maximum-likelihood training of a flow with Adam:
   minimise the mean NLL -(1/B) sum_i log p(x_i | y_i) over shuffled batches
   (no y for an unconditional flow). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "nflow/trainer.h"

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
};

nf_trainer_opts nf_trainer_defaults(void)
{
  nf_trainer_opts o = {.batch_size = 128, .iterations = 1000, .val_every = 0,
                       .callback = NULL, .user = NULL, .schedule = NF_LR_CONSTANT,
                       .lr_min = 0.0};
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
                   !flow ? "flow" : !adam ? "optimizer" : "training set");
  if (nf_adam_size(adam) != nf_flow_n_params(flow))
    return nf_fail(NF_EDIM, "%s: optimizer has %zu parameters but the flow has %zu", fn,
                   nf_adam_size(adam), nf_flow_n_params(flow));
  if (o->batch_size == 0) return nf_fail(NF_EINVAL, "%s: batch_size must be >= 1", fn);
  if (o->schedule != NF_LR_CONSTANT && o->schedule != NF_LR_COSINE)
    return nf_fail(NF_EINVAL, "%s: unknown learning-rate schedule %d", fn, (int)o->schedule);
  if (o->schedule == NF_LR_COSINE &&
      !(o->lr_min >= 0 && o->lr_min < nf_adam_options(adam).lr))
    return nf_fail(NF_EINVAL, "%s: lr_min %g is not in [0, lr)", fn, o->lr_min);
  nf_status st = check_dataset(fn, "training set", train, "dim", nf_flow_dim(flow), 0);
  if (st == NF_OK && val)
    st = check_dataset(fn, "validation set", val, "dim", nf_flow_dim(flow), 0);
  return st;
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
  if (check_args(flow, adam, train, val, &o) != NF_OK) return NULL;
  size_t batch = o.batch_size < train->n ? o.batch_size : train->n;
  size_t c = nf_flow_ctx_dim(flow);
  nf_trainer *tr = calloc(1, sizeof *tr);
  if (!tr) {
    nf_fail(NF_ENOMEM, "nf_trainer_new: out of memory");
    return NULL;
  }
  *tr = (nf_trainer){.flow = flow, .adam = adam, .train = train, .val = val,
                     .opts = o, .rng = *rng, .batch = batch,
                     .order = calloc(train->n, sizeof *tr->order),
                     .xb = nf_dalloc(batch * train->dim), .cb = c ? nf_dalloc(batch * c) : NULL,
                     .last_epoch_loss = NAN, .val_last = NAN, .val_best = NAN,
                     .lr0 = nf_adam_options(adam).lr,
                     .theta_next = nf_dalloc(nf_flow_n_params(flow))};
  if (!tr->order || !tr->xb || (c && !tr->cb) || !tr->theta_next) {
    nf_trainer_free(tr);
    nf_fail(NF_ENOMEM, "nf_trainer_new: out of memory for a batch of %zu rows", batch);
    return NULL;
  }
  if (nf_flow_reserve(flow, batch) != NF_OK) {
    nf_trainer_free(tr);
    return NULL;
  }
  for (size_t i = 0; i < train->n; i++) tr->order[i] = i;
  nf_rng_shuffle(&tr->rng, train->n, tr->order);
  tr->noise_seed = nf_rng_u64(&tr->rng);
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

void nf_trainer_free(nf_trainer *trainer)
{
  if (!trainer) return;
  free(trainer->order);
  free(trainer->xb);
  free(trainer->cb);
  free(trainer->theta_next);
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
   rows for a conditional flow, into the batch buffers. */
static void gather_batch(nf_trainer *tr, size_t m)
{
  const size_t *idx = tr->order + tr->cursor;
  gather_rows(m, idx, tr->train->dim, tr->train->x, tr->xb);
  if (tr->train_ctx) gather_rows(m, idx, tr->train_ctx->dim, tr->train_ctx->x, tr->cb);
}

/* Books a finished step of m rows with batch NLL loss; closes and reshuffles
   the epoch when every row has been visited. */
static void record_step(nf_trainer *tr, size_t m, double loss)
{
  tr->iterations++;
  tr->cursor += m;
  tr->epoch_sum += (double)m * loss;
  tr->epoch_rows += m;
  if (tr->cursor < tr->train->n) return;
  tr->epochs++;
  tr->last_epoch_loss = tr->epoch_sum / (double)tr->epoch_rows;
  tr->epoch_sum = 0.0;
  tr->epoch_rows = 0;
  tr->cursor = 0;
  nf_rng_shuffle(&tr->rng, tr->train->n, tr->order);
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

nf_status nf_trainer_step(nf_trainer *trainer, double *loss)
{
  if (!trainer) return nf_fail(NF_EINVAL, "nf_trainer_step: NULL trainer");
  nf_trainer *tr = trainer;
  if (nf_flow_n_params(tr->flow) != nf_adam_size(tr->adam))
    return nf_fail(NF_EDIM, "nf_trainer_step: the flow now has %zu parameters, the "
                   "optimizer %zu", nf_flow_n_params(tr->flow), nf_adam_size(tr->adam));
  nf_status st = check_context_set("nf_trainer_step", tr);
  if (st != NF_OK) return st;
  size_t rest = tr->train->n - tr->cursor;
  size_t m = rest < tr->batch ? rest : tr->batch;
  gather_batch(tr, m);
  double nll;
  nf_flow_set_seed(tr->flow, tr->noise_seed + tr->iterations);
  st = nf_flow_nll_grad(tr->flow, m, tr->xb, tr->train_ctx ? tr->cb : NULL, &nll);
  if (st != NF_OK) return st;
  if (!isfinite(nll))
    return nf_fail(NF_ENONFINITE, "nf_trainer_step: batch NLL is %g at iteration %zu",
                   nll, tr->iterations + 1);
  if (tr->opts.schedule == NF_LR_COSINE) nf_adam_set_lr(tr->adam, scheduled_lr(tr));
  size_t np = nf_flow_n_params(tr->flow);
  memcpy(tr->theta_next, nf_flow_params(tr->flow), np * sizeof *tr->theta_next);
  st = nf_adam_step(tr->adam, tr->theta_next, nf_flow_grad(tr->flow));
  if (st == NF_OK) st = nf_flow_set_params(tr->flow, tr->theta_next);
  if (st != NF_OK)
    return nf_fail_prefixed(st, "nf_trainer_step: the optimizer step was refused");
  record_step(tr, m, nll);
  if (loss) *loss = nll;
  return NF_OK;
}

nf_status nf_trainer_validate(nf_trainer *trainer, double *nll)
{
  if (!trainer) return nf_fail(NF_EINVAL, "nf_trainer_validate: NULL trainer");
  if (!trainer->val)
    return nf_fail(NF_EINVAL, "nf_trainer_validate: the trainer has no validation set");
  nf_status st = check_context_set("nf_trainer_validate", trainer);
  if (st != NF_OK) return st;
  double v;
  st = nf_flow_nll(trainer->flow, trainer->val->n, trainer->val->x,
                   trainer->val_ctx ? trainer->val_ctx->x : NULL, &v);
  if (st != NF_OK) return st;
  trainer->val_last = v;
  if (!(v >= trainer->val_best)) { /* also true while val_best is NaN */
    trainer->val_best = v;
    trainer->val_best_iteration = trainer->iterations;
  }
  if (nll) *nll = v;
  return NF_OK;
}

/* Whether a validation is due after the current step of a run. */
static int validation_due(const nf_trainer *tr)
{
  size_t k = tr->opts.val_every;
  if (!tr->val || k == 0) return 0;
  return tr->iterations % k == 0 || tr->iterations == tr->opts.iterations;
}

/* The summary of the trainer's state after a run that began at time t0. */
static nf_train_report make_report(const nf_trainer *tr, int stopped, double t0)
{
  double partial = tr->epoch_rows ? tr->epoch_sum / (double)tr->epoch_rows : NAN;
  nf_train_report r = {.iterations = tr->iterations, .epochs = tr->epochs,
                       .stopped = stopped,
                       .train_loss = tr->epochs ? tr->last_epoch_loss : partial,
                       .val_nll_last = tr->val_last, .val_nll_best = tr->val_best,
                       .val_best_iteration = tr->val_best_iteration,
                       .seconds = now_seconds() - t0};
  return r;
}

nf_status nf_trainer_run(nf_trainer *trainer, nf_train_report *report)
{
  if (!trainer) return nf_fail(NF_EINVAL, "nf_trainer_run: NULL trainer");
  nf_trainer *tr = trainer;
  double t0 = now_seconds();
  nf_status st = NF_OK;
  int stopped = 0;
  while (tr->iterations < tr->opts.iterations && st == NF_OK && !stopped) {
    double loss;
    st = nf_trainer_step(tr, &loss);
    if (st == NF_OK && validation_due(tr)) st = nf_trainer_validate(tr, NULL);
    if (st == NF_OK && tr->opts.callback) {
      nf_train_progress p = {.iteration = tr->iterations, .total = tr->opts.iterations,
                             .epoch = tr->epochs, .loss = loss, .val_nll = tr->val_last,
                             .seconds = now_seconds() - t0};
      stopped = tr->opts.callback(&p, tr->opts.user) != 0;
    }
  }
  if (report) *report = make_report(tr, stopped, t0);
  return st;
}

size_t nf_trainer_iterations(const nf_trainer *trainer)
{
  return trainer ? trainer->iterations : 0;
}
