/* tests/test_trainer.c — maximum-likelihood training of small flows on
   Gaussian data whose maximum-likelihood answer is known in closed form, and
   conditional training of p(x | y) on pairs with a known conditional density. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define D 2
static const double MU[D] = {1.5, -0.5};  /* data mean */
static const double SD[D] = {0.7, 2.0};    /* data standard deviations (independent) */
static const double LOG_2PI_E = 2.83787706640934548356; /* log(2 pi) + 1 */

/* An n x D data set of independent N(MU_j, SD_j^2) rows drawn from seed. */
static nf_dataset gaussian_data(size_t n, uint64_t seed)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_dataset ds = {.n = n, .dim = D, .x = malloc(n * D * sizeof(double))};
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < D; j++) ds.x[i * D + j] = MU[j] + SD[j] * nf_rng_normal(&rng);
  return ds;
}

/* Column means and biased (1/n) standard deviations: the Gaussian MLE. */
static void sample_stats(const nf_dataset *ds, double *mean, double *sd)
{
  for (size_t j = 0; j < D; j++) {
    double s = 0, ss = 0;
    for (size_t i = 0; i < ds->n; i++) s += ds->x[i * D + j];
    mean[j] = s / (double)ds->n;
    for (size_t i = 0; i < ds->n; i++) ss += pow(ds->x[i * D + j] - mean[j], 2);
    sd[j] = sqrt(ss / (double)ds->n);
  }
}

/* Differential entropy of N(mu, diag(sd^2)) on R^D: 0.5 D log(2 pi e) + sum log sd_j. */
static double diag_entropy(const double sd[D])
{
  double h = 0.5 * D * LOG_2PI_E;
  for (size_t j = 0; j < D; j++) h += log(sd[j]);
  return h;
}

/* -log N(x; mu, sd^2) = 0.5 ((x - mu) / sd)^2 + log sd + 0.5 log(2 pi). */
static double normal_nll(double x, double mu, double sd)
{
  double u = (x - mu) / sd;
  return 0.5 * u * u + log(sd) + 0.5 * (LOG_2PI_E - 1.0);
}

/* Mean NLL of ds under the true data density. */
static double true_nll(const nf_dataset *ds)
{
  double s = 0;
  for (size_t i = 0; i < ds->n; i++)
    for (size_t j = 0; j < D; j++) s += normal_nll(ds->x[i * D + j], MU[j], SD[j]);
  return s / (double)ds->n;
}

/* The conditional example: y ~ U(-2, 2) and x | y ~ N(cond_mean(y), diag(CSD^2)),
   i.e. x = (y + 0.5 e_0, -y + 0.3 e_1) with e ~ N(0, I). */
static const double CSD[D] = {0.5, 0.3};

/* E[x | y] = (y, -y) of the conditional example. */
static void cond_mean(double y, double mean[D])
{
  mean[0] = y;
  mean[1] = -y;
}

/* n pairs of the conditional example drawn from seed: x (n x D) and y (n x 1). */
static void conditional_data(size_t n, uint64_t seed, nf_dataset *x, nf_dataset *y)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  *x = (nf_dataset){.n = n, .dim = D, .x = malloc(n * D * sizeof(double))};
  *y = (nf_dataset){.n = n, .dim = 1, .x = malloc(n * sizeof(double))};
  for (size_t i = 0; i < n; i++) {
    double mean[D];
    y->x[i] = -2.0 + 4.0 * nf_rng_uniform(&rng);
    cond_mean(y->x[i], mean);
    for (size_t j = 0; j < D; j++) x->x[i * D + j] = mean[j] + CSD[j] * nf_rng_normal(&rng);
  }
}

/* Mean of -log p(x_i | y_i) over the pairs under the true conditional density. */
static double true_cond_nll(const nf_dataset *x, const nf_dataset *y)
{
  double s = 0;
  for (size_t i = 0; i < x->n; i++) {
    double mean[D];
    cond_mean(y->x[i], mean);
    for (size_t j = 0; j < D; j++) s += normal_nll(x->x[i * D + j], mean[j], CSD[j]);
  }
  return s / (double)x->n;
}

/* A 2-D flow with a learnable diagonal-normal base and no layers: theta = (mu, log_sigma). */
static nf_flow *diag_flow(void)
{
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_DIAG_NORMAL);
  ck_assert_ptr_nonnull(flow);
  return flow;
}

/* A 2-D flow N(0, I) -> affine: theta = (shift, log_scale). */
static nf_flow *affine_flow(void)
{
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_STD_NORMAL);
  nf_layer *layer = nf_affine_new(D);
  ck_assert_msg(layer != NULL, "nf_affine_new: %s", nf_errmsg());
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  return flow;
}

/* A flow on R^2 with context width ctx_dim (0: unconditional): N(0, I) -> an
   affine coupling of x_1 given [x_0, y] -> an affine coupling of x_0 given
   [x_1, y], each conditioner linear (no hidden layer), so that the conditional
   example is exactly representable (s = log CSD_j, t = +-y). theta = 0: the identity. */
static nf_flow *coupling_flow(size_t ctx_dim)
{
  nf_flow *flow = nf_flow_new(D, ctx_dim, NF_BASE_STD_NORMAL);
  ck_assert_ptr_nonnull(flow);
  for (int parity = 0; parity < 2; parity++) {
    unsigned char mask[D];
    nf_coupling_mask_half(D, parity, mask);
    nf_coupling_opts o = {.transformer = nf_transformer_spec_default(NF_TRANSFORMER_AFFINE),
                          .mask = mask, .n_hidden = 0, .act = NF_ACT_TANH};
    nf_layer *layer = nf_coupling_new(D, ctx_dim, &o, NULL);
    ck_assert_msg(layer != NULL, "nf_coupling_new: %s", nf_errmsg());
    ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  }
  return flow;
}

static nf_adam *adam_lr(const nf_flow *flow, double lr)
{
  nf_adam_opts o = nf_adam_defaults();
  o.lr = lr;
  nf_adam *adam = nf_adam_new(nf_flow_n_params(flow), &o);
  ck_assert_ptr_nonnull(adam);
  return adam;
}

static nf_rng seeded(uint64_t seed)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  return rng;
}

/* Callback state: an exponential learning-rate schedule lr0 * 0.5^(it / half)
   plus a record of what the callback saw. */
typedef struct cb_state {
  nf_adam *adam;
  double lr0;
  size_t half;     /* iterations per halving; 0 = constant lr */
  size_t calls;
  size_t last_it;  /* progress->iteration at the previous call */
  int sequence_ok; /* iterations arrived as 1, 2, 3, ... */
  size_t stop_at;  /* return 1 at this iteration; 0 = never */
  size_t first_val_it; /* first iteration with a finite val_nll */
  double last_seconds;
  int time_ok;     /* seconds never decreased */
} cb_state;

static int schedule_cb(const nf_train_progress *p, void *user)
{
  cb_state *s = user;
  s->calls++;
  if (p->iteration != s->last_it + 1) s->sequence_ok = 0;
  s->last_it = p->iteration;
  if (!isnan(p->val_nll) && s->first_val_it == 0) s->first_val_it = p->iteration;
  if (p->seconds < s->last_seconds) s->time_ok = 0;
  s->last_seconds = p->seconds;
  if (s->half) nf_adam_set_lr(s->adam, s->lr0 * pow(0.5, (double)p->iteration / (double)s->half));
  return s->stop_at && p->iteration >= s->stop_at;
}

static cb_state new_cb_state(nf_adam *adam, double lr0, size_t half)
{
  cb_state s = {.adam = adam, .lr0 = lr0, .half = half, .sequence_ok = 1, .time_ok = 1};
  return s;
}

/* Trains flow on train (validating on val; with the contexts train_ctx and
   val_ctx if not NULL) with a halving lr schedule; returns the report. */
static nf_train_report train_scheduled(nf_flow *flow, const nf_dataset *train,
                                       const nf_dataset *val, const nf_dataset *train_ctx,
                                       const nf_dataset *val_ctx, size_t batch, size_t iters,
                                       double lr0, size_t half, uint64_t seed)
{
  nf_adam *adam = adam_lr(flow, lr0);
  cb_state s = new_cb_state(adam, lr0, half);
  nf_trainer_opts o = {.batch_size = batch, .iterations = iters, .val_every = 500,
                       .callback = schedule_cb, .user = &s};
  nf_rng rng = seeded(seed);
  nf_trainer *tr = nf_trainer_new(flow, adam, train, val, &o, &rng);
  ck_assert_msg(tr != NULL, "nf_trainer_new: %s", nf_errmsg());
  if (train_ctx) ck_assert_int_eq(nf_trainer_set_context(tr, train_ctx, val_ctx), NF_OK);
  nf_train_report rep;
  nf_status st = nf_trainer_run(tr, &rep);
  ck_assert_msg(st == NF_OK, "run: %s: %s", nf_status_str(st), nf_errmsg());
  ck_assert_uint_eq(rep.iterations, iters);
  ck_assert_uint_eq(s.calls, iters);
  ck_assert_int_eq(rep.stopped, 0);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  return rep;
}

/* Max |mu - mean| and max |sigma / sd - 1| of the learned (mu, sigma) against the sample MLE. */
static void mle_errors(const double *mu, const double *sigma, const nf_dataset *ds,
                       double *err_mu, double *err_sd)
{
  double mean[D], sd[D];
  sample_stats(ds, mean, sd);
  *err_mu = *err_sd = 0;
  for (size_t j = 0; j < D; j++) {
    *err_mu = fmax(*err_mu, fabs(mu[j] - mean[j]));
    *err_sd = fmax(*err_sd, fabs(sigma[j] / sd[j] - 1));
  }
}

/* The learned (mu, sigma) of a diag-normal flow or of an affine flow. */
static void learned_gaussian(nf_flow *flow, double *mu, double *sigma)
{
  const double *th = nf_flow_params(flow);
  for (size_t j = 0; j < D; j++) {
    mu[j] = th[j];
    sigma[j] = exp(th[D + j]);
  }
}

/* Full batch with a decaying step: the iterates reach the exact sample MLE. */
static void check_full_batch(nf_flow *flow, const char *what)
{
  nf_dataset train = gaussian_data(500, 1);
  nf_train_report rep = train_scheduled(flow, &train, NULL, NULL, NULL, train.n, 6000, 0.05, 500, 7);
  double mu[D], sigma[D], em, es;
  learned_gaussian(flow, mu, sigma);
  mle_errors(mu, sigma, &train, &em, &es);
  printf("%s full batch: |mu - mean| %.3g, |sigma/sd - 1| %.3g\n", what, em, es);
  ck_assert_msg(em < 1e-6 && es < 1e-6, "%s: mean error %.3g, scale error %.3g", what, em, es);
  /* One batch is the whole set, so the epoch loss is the NLL before the last step. */
  double nll;
  ck_assert_int_eq(nf_flow_nll(flow, train.n, train.x, NULL, &nll), NF_OK);
  ck_assert_double_eq_tol(rep.train_loss, nll, 1e-9);
  ck_assert(isnan(rep.val_nll_last) && isnan(rep.val_nll_best));
  ck_assert_uint_eq(rep.epochs, 6000);
  free(train.x);
}

START_TEST(test_full_batch_reaches_mle)
{
  nf_flow *flow = diag_flow();
  check_full_batch(flow, "diag-normal base");
  nf_flow_free(flow);
  flow = affine_flow();
  check_full_batch(flow, "affine layer");
  nf_flow_free(flow);
}
END_TEST

/* Minibatches: the learned Gaussian matches the sample statistics, and the
   validation NLL reaches the entropy. */
static void check_minibatch_fit(nf_flow *flow, const char *what)
{
  nf_dataset train = gaussian_data(4000, 2), val = gaussian_data(4000, 3);
  nf_train_report rep = train_scheduled(flow, &train, &val, NULL, NULL, 100, 4000, 0.05, 400, 8);
  double mu[D], sigma[D], em, es;
  learned_gaussian(flow, mu, sigma);
  mle_errors(mu, sigma, &train, &em, &es);
  double h = diag_entropy(SD), ref = true_nll(&val);
  printf("%s minibatch: |mu - mean| %.3g, |sigma/sd - 1| %.3g, val NLL %.5f, "
         "entropy %.5f, true NLL of val %.5f, train loss %.5f\n",
         what, em, es, rep.val_nll_last, h, ref, rep.train_loss);
  ck_assert_msg(em < 1e-3 && es < 1e-3, "%s: mean error %.3g, scale error %.3g", what, em, es);
  ck_assert_msg(fabs(rep.val_nll_last - h) < 0.05, "%s: val NLL %.4f vs entropy %.4f", what,
                rep.val_nll_last, h);
  ck_assert_msg(fabs(rep.val_nll_last - ref) < 2e-3, "%s: val NLL %.5f vs true NLL %.5f",
                what, rep.val_nll_last, ref);
  ck_assert(rep.val_nll_best <= rep.val_nll_last);
  ck_assert_uint_eq(rep.epochs, 100);
  ck_assert_msg(fabs(rep.train_loss - true_nll(&train)) < 0.01, "%s: train loss %.4f", what,
                rep.train_loss);
  free(train.x);
  free(val.x);
}

START_TEST(test_diag_normal_fit)
{
  nf_flow *flow = diag_flow();
  check_minibatch_fit(flow, "diag-normal base");
  nf_flow_free(flow);
}
END_TEST

START_TEST(test_affine_fit)
{
  nf_flow *flow = affine_flow();
  check_minibatch_fit(flow, "affine layer");
  nf_flow_free(flow);
}
END_TEST

/* With the parameters effectively frozen the epoch loss is the data set's NLL,
   since an epoch visits each row once (here 7 batches of 128 and one of 104). */
START_TEST(test_epoch_loss_covers_every_row)
{
  nf_dataset train = gaussian_data(1000, 4);
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 1e-300);
  nf_trainer_opts o = nf_trainer_defaults();
  o.iterations = 20; /* 2 epochs of 8 steps, then 4 more */
  nf_rng rng = seeded(5);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, NULL, &o, &rng);
  ck_assert_ptr_nonnull(tr);
  nf_train_report rep;
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_OK);
  ck_assert_uint_eq(rep.epochs, 2);
  double nll;
  ck_assert_int_eq(nf_flow_nll(flow, train.n, train.x, NULL, &nll), NF_OK);
  ck_assert_double_eq_tol(rep.train_loss, nll, 1e-12);
  double by_hand = 0; /* NLL under the initial N(0, I): 0.5 |x|^2 + (d/2) log(2 pi) */
  for (size_t i = 0; i < train.n * D; i++) by_hand += 0.5 * train.x[i] * train.x[i];
  by_hand = by_hand / (double)train.n + 0.5 * D * (LOG_2PI_E - 1);
  ck_assert_double_eq_tol(rep.train_loss, by_hand, 1e-12);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
}
END_TEST

enum { MAX_PARAMS = 16 }; /* room for the parameters of train_seeded's flows */

/* Trains a fresh flow for 300 steps from seed: the diag-normal flow on Gaussian
   data or (conditional) the conditional coupling flow on pairs of the
   conditional example; copies its parameters into out and returns their count. */
static size_t train_seeded(uint64_t seed, int conditional, double out[MAX_PARAMS])
{
  nf_dataset train, ctx = {0};
  if (conditional)
    conditional_data(1000, 6, &train, &ctx);
  else
    train = gaussian_data(1000, 6);
  nf_flow *flow = conditional ? coupling_flow(1) : diag_flow();
  size_t np = nf_flow_n_params(flow);
  ck_assert_uint_le(np, MAX_PARAMS);
  nf_adam *adam = adam_lr(flow, 0.01);
  nf_trainer_opts o = {.batch_size = 64, .iterations = 300};
  nf_rng rng = seeded(seed);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, NULL, &o, &rng);
  if (conditional) ck_assert_int_eq(nf_trainer_set_context(tr, &ctx, NULL), NF_OK);
  ck_assert_int_eq(nf_trainer_run(tr, NULL), NF_OK);
  memcpy(out, nf_flow_params(flow), np * sizeof *out);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
  free(ctx.x);
  return np;
}

START_TEST(test_same_seed_bit_identical)
{
  for (int conditional = 0; conditional < 2; conditional++) {
    double a[MAX_PARAMS], b[MAX_PARAMS], c[MAX_PARAMS];
    size_t np = train_seeded(42, conditional, a);
    train_seeded(42, conditional, b);
    train_seeded(43, conditional, c);
    ck_assert_msg(memcmp(a, b, np * sizeof *a) == 0,
                  "conditional %d: same seed gave different parameters", conditional);
    ck_assert_msg(memcmp(a, c, np * sizeof *a) != 0,
                  "conditional %d: different seeds gave identical parameters", conditional);
  }
}
END_TEST

/* The callback runs once per step with iterations 1, 2, ...; validation shows
   up at val_every; a nonzero return stops, and a second run resumes. */
START_TEST(test_callback_and_early_stop)
{
  nf_dataset train = gaussian_data(300, 9), val = gaussian_data(100, 10);
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 0.01);
  cb_state s = new_cb_state(adam, 0.01, 0);
  s.stop_at = 7;
  nf_trainer_opts o = {.batch_size = 32, .iterations = 25, .val_every = 5,
                       .callback = schedule_cb, .user = &s};
  nf_rng rng = seeded(11);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, &val, &o, &rng);
  ck_assert_ptr_nonnull(tr);
  nf_train_report rep;
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_OK);
  ck_assert_int_eq(rep.stopped, 1);
  ck_assert_uint_eq(rep.iterations, 7);
  ck_assert_uint_eq(nf_trainer_iterations(tr), 7);
  ck_assert_uint_eq(s.calls, 7);
  ck_assert_uint_eq(s.first_val_it, 5);
  ck_assert_uint_eq(rep.val_best_iteration, 5);
  ck_assert(isfinite(rep.val_nll_last) && rep.val_nll_best == rep.val_nll_last);
  ck_assert(rep.seconds >= 0);
  /* Resume to the end: 18 more calls, validation at 10, 15, 20, 25. */
  s.stop_at = 0;
  s.last_seconds = 0; /* progress seconds count from the start of each run */
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_OK);
  ck_assert_int_eq(rep.stopped, 0);
  ck_assert_uint_eq(rep.iterations, 25);
  ck_assert_uint_eq(s.calls, 25);
  ck_assert(s.sequence_ok && s.time_ok);
  ck_assert_uint_eq(rep.epochs, 2); /* 10 steps per epoch of 300 rows */
  double v;
  ck_assert_int_eq(nf_flow_nll(flow, val.n, val.x, NULL, &v), NF_OK);
  ck_assert_double_eq(rep.val_nll_last, v); /* validated after the last step */
  ck_assert(rep.val_nll_best <= rep.val_nll_last);
  /* Nothing left to do: a third run takes no step and calls nobody. */
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_OK);
  ck_assert_uint_eq(s.calls, 25);
  /* Single steps go past the run length if asked. */
  double loss;
  ck_assert_int_eq(nf_trainer_step(tr, &loss), NF_OK);
  ck_assert(isfinite(loss));
  ck_assert_uint_eq(nf_trainer_iterations(tr), 26);
  ck_assert_int_eq(nf_trainer_validate(tr, &v), NF_OK);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
  free(val.x);
}
END_TEST

/* A step whose NLL is not finite is refused and not counted; run reports it.
   Theta cannot hold a non-finite value any more (nf_flow_set_params refuses
   it), so the NLL overflows instead: log_sigma = -700 is accepted (exp(700)
   is finite) but (x - mu)^2 exp(1400) is +Inf. */
START_TEST(test_nonfinite_step)
{
  nf_dataset train = gaussian_data(50, 12);
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 0.01);
  nf_trainer_opts o = {.batch_size = 10, .iterations = 5};
  nf_rng rng = seeded(13);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, NULL, &o, &rng);
  ck_assert_int_eq(nf_trainer_step(tr, NULL), NF_OK);
  double keep[2 * D];
  memcpy(keep, nf_flow_params(flow), sizeof keep);
  keep[D] = -700.0; /* sigma = exp(-700) */
  ck_assert_int_eq(nf_flow_set_params(flow, keep), NF_OK);
  ck_assert_int_eq(nf_trainer_step(tr, NULL), NF_ENONFINITE);
  ck_assert(memcmp(keep, nf_flow_params(flow), sizeof keep) == 0);
  ck_assert_uint_eq(nf_trainer_iterations(tr), 1);
  ck_assert_uint_eq(nf_adam_steps(adam), 1);
  nf_train_report rep;
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_ENONFINITE);
  ck_assert_uint_eq(rep.iterations, 1);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
}
END_TEST

/* nf_trainer_new refuses bad arguments with NULL and a message. */
START_TEST(test_bad_arguments)
{
  nf_dataset train = gaussian_data(20, 14), wide = {.n = 20, .dim = 3, .x = train.x};
  nf_dataset empty = {.n = 0, .dim = D, .x = train.x};
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 0.01), *small = nf_adam_new(3, NULL);
  nf_trainer_opts o = nf_trainer_defaults(), zero_batch = o;
  zero_batch.batch_size = 0;
  nf_rng rng = seeded(15);
  struct bad_case {
    nf_flow *flow; nf_adam *adam; const nf_dataset *train, *val;
    const nf_trainer_opts *opts; const nf_rng *rng; const char *msg;
  } cases[] = {
    {NULL, adam, &train, NULL, &o, &rng, "flow"},
    {flow, NULL, &train, NULL, &o, &rng, "optimizer"},
    {flow, adam, NULL, NULL, &o, &rng, "training"},
    {flow, adam, &train, NULL, &o, NULL, "rng"},
    {flow, small, &train, NULL, &o, &rng, "parameters"},
    {flow, adam, &wide, NULL, &o, &rng, "dim"},
    {flow, adam, &train, &wide, &o, &rng, "validation"},
    {flow, adam, &empty, NULL, &o, &rng, "empty"},
    {flow, adam, &train, NULL, &zero_batch, &rng, "batch_size"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    struct bad_case *c = &cases[k];
    ck_assert_ptr_null(nf_trainer_new(c->flow, c->adam, c->train, c->val, c->opts, c->rng));
    ck_assert_msg(strstr(nf_errmsg(), c->msg) != NULL, "case %zu: '%s' lacks '%s'", k,
                  nf_errmsg(), c->msg);
  }
  /* Non-finite data is found at creation, with its row and column. */
  train.x[7 * D + 1] = NAN;
  ck_assert_ptr_null(nf_trainer_new(flow, adam, &train, NULL, &o, &rng));
  ck_assert(strstr(nf_errmsg(), "row 7 column 1") != NULL);
  train.x[7 * D + 1] = 0;
  /* A batch larger than the data is capped; NULL opts are the defaults (batch 128 > 20). */
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, NULL, NULL, &rng);
  ck_assert_ptr_nonnull(tr);
  ck_assert_int_eq(nf_trainer_step(tr, NULL), NF_OK);
  ck_assert_int_eq(nf_trainer_validate(tr, NULL), NF_EINVAL); /* no validation set */
  ck_assert_int_eq(nf_trainer_step(NULL, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_trainer_run(NULL, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_trainer_validate(NULL, NULL), NF_EINVAL);
  ck_assert_uint_eq(nf_trainer_iterations(NULL), 0);
  nf_trainer_free(tr);
  nf_trainer_free(NULL);
  nf_adam_free(adam);
  nf_adam_free(small);
  nf_flow_free(flow);
  free(train.x);
}
END_TEST

/* Records the learning rate Adam used at each step (read after the step). */
static int record_lr(const nf_train_progress *p, void *user)
{
  const void **u = user;
  ((double *)u[1])[p->iteration - 1] = nf_adam_options((const nf_adam *)u[0]).lr;
  return 0;
}

START_TEST(test_cosine_schedule)
{
  enum { T = 10 };
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 1e-2);
  nf_dataset data = gaussian_data(64, 3);
  double lr[T];
  const void *user[2] = {adam, lr};
  nf_trainer_opts o = {.batch_size = 16, .iterations = T, .callback = record_lr,
                       .user = (void *)user, .schedule = NF_LR_COSINE, .lr_min = 1e-4};
  nf_rng rng = seeded(5);
  nf_trainer *tr = nf_trainer_new(flow, adam, &data, NULL, &o, &rng);
  ck_assert_ptr_nonnull(tr);
  ck_assert_int_eq(nf_trainer_run(tr, NULL), NF_OK);
  for (int t = 0; t < T; t++) /* lr_t = lr_min + (lr0 - lr_min)(1 + cos(pi t / T)) / 2 */
    ck_assert_double_eq_tol(lr[t], 1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + cos(3.14159265358979323846 * t / T)), 1e-17);
  nf_trainer_free(tr);
  o.lr_min = 1e-2; /* not below lr0 */
  ck_assert_ptr_null(nf_trainer_new(flow, adam, &data, NULL, &o, &rng));
  o.schedule = (nf_lr_schedule)9;
  ck_assert_ptr_null(nf_trainer_new(flow, adam, &data, NULL, &o, &rng));
  free(data.x);
  nf_adam_free(adam);
  nf_flow_free(flow);
}
END_TEST

/* The point of the (2m+1) x (2m+1) grid of step h centred on the origin where
   log p(x | y) of the conditional flow is largest. */
static void grid_argmax(nf_flow *flow, double y, size_t m, double h, double arg[D])
{
  size_t k = 2 * m + 1;
  double *pts = malloc(k * D * sizeof *pts), *ctx = malloc(k * sizeof *ctx);
  double *logp = malloc(k * sizeof *logp), best = -INFINITY;
  for (size_t j = 0; j < k; j++) ctx[j] = y;
  for (size_t i = 0; i < k; i++) {
    for (size_t j = 0; j < k; j++) {
      pts[j * D] = ((double)i - (double)m) * h;
      pts[j * D + 1] = ((double)j - (double)m) * h;
    }
    ck_assert_int_eq(nf_flow_log_prob(flow, k, pts, ctx, logp), NF_OK);
    for (size_t j = 0; j < k; j++)
      if (logp[j] > best) {
        best = logp[j];
        memcpy(arg, pts + j * D, D * sizeof *arg);
      }
  }
  free(pts);
  free(ctx);
  free(logp);
}

/* log p(x | y_a) - log p(x | y_b) of the flow at one point x. */
static double log_ratio(nf_flow *flow, const double x[D], double y_a, double y_b)
{
  double xx[2 * D] = {x[0], x[1], x[0], x[1]}, ctx[2] = {y_a, y_b}, logp[2];
  ck_assert_int_eq(nf_flow_log_prob(flow, 2, xx, ctx, logp), NF_OK);
  return logp[0] - logp[1];
}

/* A conditional flow learns x | y: its held-out NLL reaches the conditional
   entropy, far below what the same flow without the context reaches, and its
   density moves with y as the true one does. */
START_TEST(test_conditional_fit)
{
  nf_dataset tx, ty, vx, vy;
  conditional_data(4000, 21, &tx, &ty);
  conditional_data(4000, 22, &vx, &vy);
  nf_flow *cond = coupling_flow(1), *uncond = coupling_flow(0);
  nf_train_report rc = train_scheduled(cond, &tx, &vx, &ty, &vy, 100, 3000, 0.05, 400, 8);
  nf_train_report ru = train_scheduled(uncond, &tx, &vx, NULL, NULL, 100, 3000, 0.05, 400, 8);
  double h = diag_entropy(CSD), ref = true_cond_nll(&vx, &vy);
  printf("conditional: val NLL %.5f, H(x|y) %.5f, true NLL of val %.5f, train loss %.5f; "
         "unconditional val NLL %.5f\n", rc.val_nll_last, h, ref, rc.train_loss, ru.val_nll_last);
  /* Held-out NLL: within 5e-3 of the true density's NLL of the same pairs, and
     within 0.05 (3 standard errors of a mean over 4000 pairs) of H(x | y). */
  ck_assert_msg(fabs(rc.val_nll_last - ref) < 5e-3, "val NLL %.5f vs true NLL %.5f",
                rc.val_nll_last, ref);
  ck_assert_msg(fabs(rc.val_nll_last - h) < 0.05, "val NLL %.4f vs H(x|y) %.4f",
                rc.val_nll_last, h);
  ck_assert_msg(ru.val_nll_last - rc.val_nll_last > 1.0, "unconditional %.4f vs conditional %.4f",
                ru.val_nll_last, rc.val_nll_last);
  /* The mode of p(x | y) follows the true conditional mean (y, -y): to 3 grid steps. */
  const double ys[2] = {-1.0, 1.5}, step = 0.01;
  for (size_t k = 0; k < 2; k++) {
    double arg[D], mean[D];
    grid_argmax(cond, ys[k], 300, step, arg);
    cond_mean(ys[k], mean);
    double err = fmax(fabs(arg[0] - mean[0]), fabs(arg[1] - mean[1]));
    printf("conditional: argmax of p(x | y = %g) at (%.2f, %.2f), |argmax - (y, -y)| %.3g\n",
           ys[k], arg[0], arg[1], err);
    ck_assert_msg(err <= 0.03, "y = %g: argmax off by %.3g", ys[k], err);
  }
  /* At x = (0.5, -0.5), the mean given y = 0.5: log p(x | 0.5) - log p(x | y_b) =
     0.5 sum_j ((0.5 - y_b) / CSD_j)^2 for the truth, at contexts y_b where x is
     at most 1.7 standard deviations from the conditional mean (where the data
     are); to 5% (the sampling error of 1 / sd^2 from 4000 pairs is about 2%). */
  const double xm[D] = {0.5, -0.5}, yb[4] = {0.0, 0.25, 0.75, 1.0};
  double worst = 0; /* largest relative error */
  for (size_t k = 0; k < 4; k++) {
    double want = 0.5 * (pow((0.5 - yb[k]) / CSD[0], 2) + pow((0.5 - yb[k]) / CSD[1], 2));
    double got = log_ratio(cond, xm, 0.5, yb[k]);
    printf("conditional: log p(x | 0.5) - log p(x | %.2f) at (0.5, -0.5): %.4f, true %.4f\n",
           yb[k], got, want);
    worst = fmax(worst, fabs(got / want - 1));
  }
  ck_assert_msg(worst < 0.05, "log-density ratios off by up to %.3g relative", worst);
  nf_flow_free(cond);
  nf_flow_free(uncond);
  free(tx.x);
  free(ty.x);
  free(vx.x);
  free(vy.x);
}
END_TEST

/* Each batch pairs every x row with its own context row: with the parameters
   effectively frozen (random, so p(x | y) depends on y) the epoch loss is the
   paired NLL of the training set and validation gives the paired NLL of the
   validation set, while other pairings give clearly different NLLs. */
START_TEST(test_conditional_rows_stay_paired)
{
  nf_dataset tx, ty, vx, vy;
  conditional_data(1000, 31, &tx, &ty);
  conditional_data(300, 32, &vx, &vy);
  nf_flow *flow = coupling_flow(1);
  double *theta = th_random_points(nf_flow_n_params(flow), 1, 33, 0.5);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  free(theta);
  nf_adam *adam = adam_lr(flow, 1e-300);
  nf_trainer_opts o = nf_trainer_defaults();
  o.iterations = 20; /* 2 epochs of 8 steps (7 x 128 + 104), then 4 more */
  nf_rng rng = seeded(34);
  nf_trainer *tr = nf_trainer_new(flow, adam, &tx, &vx, &o, &rng);
  ck_assert_msg(tr != NULL, "nf_trainer_new: %s", nf_errmsg());
  ck_assert_int_eq(nf_trainer_set_context(tr, &ty, &vy), NF_OK);
  nf_train_report rep;
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_OK);
  ck_assert_uint_eq(rep.epochs, 2);
  double nll, v, v_flow, shuffled;
  ck_assert_int_eq(nf_flow_nll(flow, tx.n, tx.x, ty.x, &nll), NF_OK);
  printf("conditional pairing: epoch loss %.12f, paired NLL %.12f\n", rep.train_loss, nll);
  ck_assert_double_eq_tol(rep.train_loss, nll, 1e-12);
  ck_assert_int_eq(nf_trainer_validate(tr, &v), NF_OK);
  ck_assert_int_eq(nf_flow_nll(flow, vx.n, vx.x, vy.x, &v_flow), NF_OK);
  ck_assert_double_eq(v, v_flow);
  /* Reversed contexts: the pairing matters for this flow. */
  double *rev = malloc(tx.n * sizeof *rev);
  for (size_t i = 0; i < tx.n; i++) rev[i] = ty.x[tx.n - 1 - i];
  ck_assert_int_eq(nf_flow_nll(flow, tx.n, tx.x, rev, &shuffled), NF_OK);
  printf("conditional pairing: NLL with reversed contexts %.6f\n", shuffled);
  ck_assert_msg(fabs(shuffled - nll) > 0.1, "pairing changes the NLL by only %.3g",
                fabs(shuffled - nll));
  free(rev);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(tx.x);
  free(ty.x);
  free(vx.x);
  free(vy.x);
}
END_TEST

/* A copy of ds whose entry k (in row-major order) is bad. */
static nf_dataset poisoned_copy(const nf_dataset *ds, size_t k, double bad)
{
  nf_dataset c = {.n = ds->n, .dim = ds->dim, .x = malloc(ds->n * ds->dim * sizeof(double))};
  memcpy(c.x, ds->x, ds->n * ds->dim * sizeof(double));
  c.x[k] = bad;
  return c;
}

/* A conditional flow is accepted by nf_trainer_new but cannot step or validate
   without its context (NF_ESTATE); nf_trainer_set_context refuses contexts
   that do not fit with the documented statuses, keeping what it had. */
START_TEST(test_conditional_context_errors)
{
  enum { N = 20, NV = 10 };
  nf_dataset tx, ty, vx, vy;
  conditional_data(N, 41, &tx, &ty);
  conditional_data(NV, 42, &vx, &vy);
  nf_flow *flow = coupling_flow(1), *plain = coupling_flow(0);
  nf_adam *adam = adam_lr(flow, 0.01);
  nf_rng rng = seeded(43);
  nf_trainer_opts o = {.batch_size = 8, .iterations = 5, .val_every = 1};
  nf_trainer *tr = nf_trainer_new(flow, adam, &tx, &vx, &o, &rng);
  ck_assert_msg(tr != NULL, "nf_trainer_new: %s", nf_errmsg());
  /* No context yet. */
  nf_train_report rep;
  ck_assert_int_eq(nf_trainer_step(tr, NULL), NF_ESTATE);
  ck_assert_msg(strstr(nf_errmsg(), "nf_trainer_set_context") != NULL, "'%s'", nf_errmsg());
  ck_assert_int_eq(nf_trainer_validate(tr, NULL), NF_ESTATE);
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_ESTATE);
  ck_assert_uint_eq(rep.iterations, 0);
  /* Contexts that do not fit. */
  nf_dataset wide = {.n = N, .dim = 2, .x = tx.x}, short_ctx = {.n = N - 1, .dim = 1, .x = ty.x};
  nf_dataset empty = {.n = 0, .dim = 1, .x = ty.x}, val_long = {.n = N, .dim = 1, .x = ty.x};
  nf_dataset nan_ctx = poisoned_copy(&ty, 5, NAN), bad_val = poisoned_copy(&vy, 4, INFINITY);
  struct ctx_case {
    nf_trainer *tr; const nf_dataset *train_ctx, *val_ctx; nf_status want; const char *msg;
  } cases[] = {
    {NULL, &ty, &vy, NF_EINVAL, "NULL trainer"},
    {tr, NULL, &vy, NF_EINVAL, "NULL training context"},
    {tr, &nan_ctx, NULL, NF_EINVAL, "NULL validation context"},
    {tr, &wide, &vy, NF_EDIM, "training context has dim 2 but the flow's ctx_dim is 1"},
    {tr, &short_ctx, &vy, NF_EDIM, "training context has 19 rows"},
    {tr, &val_long, &val_long, NF_EDIM, "validation context has 20 rows"},
    {tr, &empty, &vy, NF_EINVAL, "training context is empty"},
    {tr, &nan_ctx, &vy, NF_ENONFINITE, "training context row 5 column 0"},
    {tr, &val_long, &bad_val, NF_ENONFINITE, "validation context row 4 column 0"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    struct ctx_case *c = &cases[k];
    ck_assert_int_eq(nf_trainer_set_context(c->tr, c->train_ctx, c->val_ctx), c->want);
    ck_assert_msg(strstr(nf_errmsg(), c->msg) != NULL, "case %zu: '%s' lacks '%s'", k,
                  nf_errmsg(), c->msg);
  }
  ck_assert_int_eq(nf_trainer_step(tr, NULL), NF_ESTATE); /* nothing was set */
  /* A good context: steps and validation work; a bad one later keeps it. */
  ck_assert_int_eq(nf_trainer_set_context(tr, &ty, &vy), NF_OK);
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_OK);
  ck_assert_uint_eq(rep.iterations, 5);
  ck_assert_int_eq(nf_trainer_set_context(tr, &short_ctx, &vy), NF_EDIM);
  double v, v_flow;
  ck_assert_int_eq(nf_trainer_validate(tr, &v), NF_OK);
  ck_assert_int_eq(nf_flow_nll(flow, vx.n, vx.x, vy.x, &v_flow), NF_OK);
  ck_assert_double_eq(v, v_flow);
  ck_assert_int_eq(nf_trainer_step(tr, NULL), NF_OK);
  nf_trainer_free(tr);
  /* Without a validation set a validation context is refused, and NULL is fine. */
  tr = nf_trainer_new(flow, adam, &tx, NULL, &o, &rng);
  ck_assert_ptr_nonnull(tr);
  ck_assert_int_eq(nf_trainer_set_context(tr, &ty, &vy), NF_EINVAL);
  ck_assert(strstr(nf_errmsg(), "no validation set") != NULL);
  ck_assert_int_eq(nf_trainer_set_context(tr, &ty, NULL), NF_OK);
  ck_assert_int_eq(nf_trainer_step(tr, NULL), NF_OK);
  nf_trainer_free(tr);
  /* An unconditional flow takes no context and trains without one. */
  nf_adam *adam_plain = adam_lr(plain, 0.01);
  tr = nf_trainer_new(plain, adam_plain, &tx, NULL, &o, &rng);
  ck_assert_ptr_nonnull(tr);
  ck_assert_int_eq(nf_trainer_set_context(tr, &ty, NULL), NF_EINVAL);
  ck_assert(strstr(nf_errmsg(), "unconditional") != NULL);
  ck_assert_int_eq(nf_trainer_step(tr, NULL), NF_OK);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_adam_free(adam_plain);
  nf_flow_free(flow);
  nf_flow_free(plain);
  free(nan_ctx.x);
  free(bad_val.x);
  free(tx.x);
  free(ty.x);
  free(vx.x);
  free(vy.x);
}
END_TEST

/* ---- best restore, patience, curve, checkpoints ---- */

/* The theta seen at each validation, by iteration (progress callback). */
typedef struct theta_log {
  nf_flow *flow;
  size_t every, n;
  double theta[64][MAX_PARAMS];
  double val[64];
} theta_log;

static int log_theta(const nf_train_progress *p, void *user)
{
  theta_log *log = user;
  if (p->iteration % log->every == 0 && log->n < 64) {
    memcpy(log->theta[log->n], nf_flow_params(log->flow),
           nf_flow_n_params(log->flow) * sizeof(double));
    log->val[log->n++] = p->val_nll;
  }
  return 0;
}

/* restore_best ends the run at the theta of the lowest validation NLL, which
   a large learning rate leaves behind; the report names its iteration. */
START_TEST(test_restore_best)
{
  nf_dataset train = gaussian_data(200, 41), val = gaussian_data(100, 42);
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 1.0);
  static theta_log log;
  log = (theta_log){.flow = flow, .every = 2};
  nf_trainer_opts o = {.batch_size = 8, .iterations = 60, .val_every = 2,
                       .restore_best = 1, .callback = log_theta, .user = &log};
  nf_rng rng = seeded(43);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, &val, &o, &rng);
  nf_train_report rep;
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_OK);
  ck_assert_uint_eq(rep.iterations, 60);
  ck_assert_uint_eq(rep.restored_iteration, rep.val_best_iteration);
  ck_assert_uint_gt(rep.restored_iteration, 0);
  ck_assert_uint_lt(rep.restored_iteration, 60); /* the last theta was not the best */
  size_t k = rep.restored_iteration / 2 - 1;
  ck_assert(log.val[k] == rep.val_nll_best);
  ck_assert(memcmp(log.theta[k], nf_flow_params(flow), 2 * D * sizeof(double)) == 0);
  double v;
  ck_assert_int_eq(nf_flow_nll(flow, val.n, val.x, NULL, &v), NF_OK);
  ck_assert(v == rep.val_nll_best);
  printf("restore_best: best %.6f at iteration %zu of 60, last %.6f\n", rep.val_nll_best,
         rep.restored_iteration, rep.val_nll_last);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
  free(val.x);
}
END_TEST

/* patience: with the parameters frozen no validation improves on the first,
   so the run stops after `patience` more and says why. */
START_TEST(test_patience)
{
  nf_dataset train = gaussian_data(100, 44), val = gaussian_data(50, 45);
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 1e-300);
  nf_trainer_opts o = {.batch_size = 10, .iterations = 100, .val_every = 2, .patience = 3};
  nf_rng rng = seeded(46);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, &val, &o, &rng);
  nf_train_report rep;
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_OK);
  ck_assert_uint_eq(rep.iterations, 8);
  ck_assert_int_eq(rep.stopped, 1);
  ck_assert_int_eq(rep.stop, NF_STOP_PATIENCE);
  ck_assert_msg(strstr(rep.stop_reason, "3 validations") != NULL, "%s", rep.stop_reason);
  printf("patience: %s\n", rep.stop_reason);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
  free(val.x);
}
END_TEST

/* The curve: a header, then a row every K steps and at the last. */
START_TEST(test_curve_csv)
{
  nf_dataset train = gaussian_data(100, 47), val = gaussian_data(50, 48);
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 0.01);
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  nf_trainer_opts o = {.batch_size = 10, .iterations = 12, .curve_every = 5, .curve_csv = f};
  nf_rng rng = seeded(49);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, &val, &o, &rng);
  ck_assert_int_eq(nf_trainer_run(tr, NULL), NF_OK);
  rewind(f);
  char line[256];
  ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
  ck_assert_str_eq(line, "iter,seconds,train_loss,val_loss\n");
  size_t iters[3] = {5, 10, 12}, k = 0, it;
  double sec, tl, vl, last = 0;
  while (fgets(line, sizeof line, f)) {
    ck_assert_int_eq(sscanf(line, "%zu,%lf,%lf,%lf", &it, &sec, &tl, &vl), 4);
    ck_assert_uint_lt(k, 3);
    ck_assert_uint_eq(it, iters[k++]);
    ck_assert(isfinite(tl) && isfinite(vl) && sec >= last);
    last = sec;
  }
  ck_assert_uint_eq(k, 3);
  fclose(f);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
  free(val.x);
}
END_TEST

/* Stops a run at iteration *user (the user's interruption). */
static int stop_at(const nf_train_progress *p, void *user)
{
  return p->iteration == *(const size_t *)user;
}

/* A trainer of the conditional coupling flow with validation, best restore,
   a curve and a cosine schedule over 60 steps; theta out (n_params) after the
   60, with the first run stopped after `save_at` steps, saved, and loaded
   into a new flow and trainer if save_at > 0. */
static void train_checkpointed(size_t save_at, const char *path, double *theta)
{
  nf_dataset tx, ty, vx, vy;
  conditional_data(300, 51, &tx, &ty);
  conditional_data(100, 52, &vx, &vy);
  nf_trainer_opts o = {.batch_size = 32, .iterations = 60, .val_every = 7,
                       .restore_best = 1, .curve_every = 10,
                       .schedule = NF_LR_COSINE, .lr_min = 1e-4};
  nf_rng rng = seeded(53);
  for (int part = save_at ? 0 : 1; part < 2; part++) {
    o.callback = part == 0 ? stop_at : NULL;
    o.user = &save_at;
    nf_flow *flow = coupling_flow(1);
    nf_adam *adam = adam_lr(flow, 0.05);
    nf_trainer *tr = nf_trainer_new(flow, adam, &tx, &vx, &o, &rng);
    ck_assert_msg(tr != NULL, "nf_trainer_new: %s", nf_errmsg());
    ck_assert_int_eq(nf_trainer_set_context(tr, &ty, &vy), NF_OK);
    if (part == 1 && save_at)
      ck_assert_msg(nf_trainer_load_state(tr, path) == NF_OK, "load: %s", nf_errmsg());
    ck_assert_int_eq(nf_trainer_run(tr, NULL), NF_OK);
    if (part == 0)
      ck_assert_msg(nf_trainer_save_state(tr, path) == NF_OK, "save: %s", nf_errmsg());
    else
      memcpy(theta, nf_flow_params(flow), nf_flow_n_params(flow) * sizeof *theta);
    nf_trainer_free(tr);
    nf_adam_free(adam);
    nf_flow_free(flow);
  }
  free(tx.x), free(ty.x), free(vx.x), free(vy.x);
}

/* 60 steps in one go equal 25, a saved state, a new flow and trainer loading
   it, and 35 more: theta bit for bit (cosine schedule, validation, best
   restore and a conditional flow included). */
START_TEST(test_checkpoint_resume)
{
  char path[] = "/tmp/nflow-state-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  close(fd);
  double whole[MAX_PARAMS], resumed[MAX_PARAMS];
  train_checkpointed(0, path, whole);
  train_checkpointed(25, path, resumed);
  nf_flow *flow = coupling_flow(1);
  size_t np = nf_flow_n_params(flow);
  nf_flow_free(flow);
  ck_assert(memcmp(whole, resumed, np * sizeof(double)) == 0);
  unlink(path);
}
END_TEST

/* Divergence: 1000 steps of the coupling flow on the Gaussian data at lr lr;
   the report out. The batch losses are printed every 100 steps. */
static nf_train_report train_at_lr(double lr)
{
  nf_dataset train = gaussian_data(2000, 61);
  nf_flow *flow = coupling_flow(0);
  nf_adam *adam = adam_lr(flow, lr);
  nf_trainer_opts o = {.batch_size = 50, .iterations = 1000};
  nf_rng rng = seeded(62);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, NULL, &o, &rng);
  ck_assert_msg(tr != NULL, "nf_trainer_new: %s", nf_errmsg());
  nf_train_report rep;
  ck_assert_msg(nf_trainer_run(tr, &rep) == NF_OK, "lr %g: %s", lr, nf_errmsg());
  printf("lr %g: smoothed loss %.6g (best %.6g), diverged %d at %zu (%.6g vs %.6g)\n", lr,
         rep.loss_smoothed, rep.loss_smoothed_best, rep.diverged, rep.diverged_iteration,
         rep.diverged_loss, rep.diverged_best);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
  return rep;
}

/* lr 10 drives the smoothed loss far above its best and the report says so;
   lr 0.01 does not. */
START_TEST(test_divergence_flag)
{
  nf_train_report bad = train_at_lr(10.0), good = train_at_lr(0.01);
  ck_assert_int_eq(bad.diverged, 1);
  ck_assert_uint_ge(bad.diverged_iteration, NF_TRAIN_DIVERGE_STEPS);
  ck_assert(bad.diverged_loss > bad.diverged_best + NF_TRAIN_DIVERGE_NATS * D);
  ck_assert_int_eq(good.diverged, 0);
  ck_assert_uint_eq(good.diverged_iteration, 0);
  ck_assert(isnan(good.diverged_loss));
  ck_assert(good.loss_smoothed_best <= good.loss_smoothed);
}
END_TEST

/* Loading refuses a state saved for other data or another flow, naming what
   differs, and leaves the trainer as it was. */
START_TEST(test_checkpoint_refusals)
{
  char path[] = "/tmp/nflow-state-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  close(fd);
  nf_dataset a = gaussian_data(100, 54), b = gaussian_data(120, 55), c = gaussian_data(100, 56);
  nf_flow *flow = diag_flow(), *other = affine_flow();
  nf_adam *adam = adam_lr(flow, 0.01), *adam2 = adam_lr(other, 0.01);
  nf_trainer_opts o = {.batch_size = 10, .iterations = 5};
  nf_rng rng = seeded(57);
  nf_trainer *tr = nf_trainer_new(flow, adam, &a, NULL, &o, &rng);
  ck_assert_int_eq(nf_trainer_run(tr, NULL), NF_OK);
  ck_assert_int_eq(nf_trainer_save_state(tr, path), NF_OK);
  nf_trainer *tb = nf_trainer_new(flow, adam, &b, NULL, &o, &rng);
  ck_assert_int_eq(nf_trainer_load_state(tb, path), NF_EDIM);
  ck_assert_msg(strstr(nf_errmsg(), "100 training rows") != NULL, "%s", nf_errmsg());
  nf_trainer *tc = nf_trainer_new(flow, adam, &c, NULL, &o, &rng);
  ck_assert_int_eq(nf_trainer_load_state(tc, path), NF_EDIM);
  ck_assert_msg(strstr(nf_errmsg(), "other training data") != NULL, "%s", nf_errmsg());
  ck_assert_uint_eq(nf_trainer_iterations(tc), 0);
  if (nf_flow_n_params(other) != nf_flow_n_params(flow)) {
    nf_trainer *to = nf_trainer_new(other, adam2, &a, NULL, &o, &rng);
    ck_assert_int_eq(nf_trainer_load_state(to, path), NF_EDIM);
    ck_assert_msg(strstr(nf_errmsg(), "parameters") != NULL, "%s", nf_errmsg());
    nf_trainer_free(to);
  }
  ck_assert_int_eq(nf_trainer_load_state(tc, "/nonexistent/state"), NF_EIO);
  nf_trainer_free(tr), nf_trainer_free(tb), nf_trainer_free(tc);
  nf_adam_free(adam), nf_adam_free(adam2);
  nf_flow_free(flow), nf_flow_free(other);
  free(a.x), free(b.x), free(c.x);
  unlink(path);
}
END_TEST

/* The schedule and stop-reason enums have names, and the names parse back. */
/* ---- other objectives (objective.h) ---- */

/* The Gaussian target N(MU, diag(SD^2)) as a one-component mixture. */
static nf_target *gaussian_target(void)
{
  double w = 1.0;
  nf_target *t = nf_target_mixture(D, 1, &w, MU, SD);
  ck_assert_msg(t != NULL, "nf_target_mixture: %s", nf_errmsg());
  return t;
}

/* Reverse KL without data: a diagonal-normal base learns N(MU, SD^2) from its
   unnormalised density alone (600 steps of 128 draws, lr 0.02, seed 71): mu
   within 0.02 and sigma within 2% of the target's, ESS of the last step's
   draws above 0.99 (a cosine schedule to lr 1e-4 quiets the last
   steps' noise), and an epoch per step (the one-row placeholder). The
   same run with the STL estimator lands as close. */
START_TEST(test_reverse_kl_fit)
{
  nf_target *target = gaussian_target();
  for (int stl = 0; stl < 2; stl++) {
    nf_flow *flow = diag_flow();
    nf_adam *adam = adam_lr(flow, 0.02);
    nf_objective obj = nf_objective_reverse_kl(target);
    obj.estimator = stl ? NF_GRAD_STL : NF_GRAD_TOTAL;
    nf_trainer_opts o = {.batch_size = 128, .iterations = 600, .objective = &obj,
                         .schedule = NF_LR_COSINE, .lr_min = 1e-4};
    nf_rng rng = seeded(71);
    nf_trainer *tr = nf_trainer_new(flow, adam, NULL, NULL, &o, &rng);
    ck_assert_msg(tr != NULL, "nf_trainer_new: %s", nf_errmsg());
    nf_train_report rep;
    ck_assert_msg(nf_trainer_run(tr, &rep) == NF_OK, "%s", nf_errmsg());
    const double *theta = nf_flow_params(flow);
    for (size_t j = 0; j < D; j++) {
      printf("reverse KL (%s): mu_%zu %.4f (%.1f), sigma_%zu %.4f (%.1f), ess %.5f, loss %.4f\n",
             stl ? "stl" : "total", j, theta[j], MU[j], j, exp(theta[D + j]), SD[j], rep.ess_last,
             rep.train_loss);
      ck_assert_double_eq_tol(theta[j], MU[j], 0.02);
      ck_assert_double_eq_tol(exp(theta[D + j]) / SD[j], 1.0, 0.02);
    }
    ck_assert_double_gt(rep.ess_last, 0.99);
    ck_assert_uint_eq(rep.epochs, rep.iterations);
    nf_trainer_free(tr);
    nf_adam_free(adam);
    nf_flow_free(flow);
  }
  nf_target_free(target);
}
END_TEST

/* Reverse-KL training for 40 steps in one go equals 15 steps, a saved state,
   a new trainer and 25 more, bit for bit (the draws come from the trainer's
   saved rng); the curve CSV carries the ess column. */
static void train_reverse_kl(size_t save_at, const char *path, double *theta, FILE *curve)
{
  nf_target *target = gaussian_target();
  nf_objective obj = nf_objective_reverse_kl(target);
  nf_trainer_opts o = {.batch_size = 16, .iterations = 40, .objective = &obj,
                       .curve_every = 10, .curve_csv = curve};
  nf_rng rng = seeded(72);
  for (int part = save_at ? 0 : 1; part < 2; part++) {
    o.callback = part == 0 ? stop_at : NULL;
    o.user = &save_at;
    nf_flow *flow = affine_flow();
    nf_adam *adam = adam_lr(flow, 0.05);
    nf_trainer *tr = nf_trainer_new(flow, adam, NULL, NULL, &o, &rng);
    ck_assert_msg(tr != NULL, "%s", nf_errmsg());
    if (part == 1 && save_at) ck_assert_int_eq(nf_trainer_load_state(tr, path), NF_OK);
    ck_assert_int_eq(nf_trainer_run(tr, NULL), NF_OK);
    if (part == 0) ck_assert_int_eq(nf_trainer_save_state(tr, path), NF_OK);
    memcpy(theta, nf_flow_params(flow), nf_flow_n_params(flow) * sizeof *theta);
    nf_trainer_free(tr);
    nf_adam_free(adam);
    nf_flow_free(flow);
  }
  nf_target_free(target);
}

START_TEST(test_reverse_kl_resume)
{
  char path[] = "/tmp/nflow-rkl-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  close(fd);
  double whole[2 * D], resumed[2 * D];
  FILE *curve = tmpfile();
  ck_assert_ptr_nonnull(curve);
  train_reverse_kl(0, path, whole, curve);
  train_reverse_kl(15, path, resumed, NULL);
  ck_assert(memcmp(whole, resumed, sizeof whole) == 0);
  char line[256] = "";
  rewind(curve);
  ck_assert_ptr_nonnull(fgets(line, sizeof line, curve));
  ck_assert_str_eq(line, "iter,seconds,train_loss,val_loss,ess\n");
  size_t rows = 0;
  double ess = NAN;
  while (fgets(line, sizeof line, curve)) {
    rows++;
    char *last = strrchr(line, ',');
    ess = strtod(last + 1, NULL);
  }
  ck_assert_uint_eq(rows, 4);
  ck_assert_msg(ess > 0 && ess <= 1, "curve ess %g", ess);
  fclose(curve);
  unlink(path);
}
END_TEST

/* What a trainer refuses about an objective, with the reason. */
START_TEST(test_objective_refusals)
{
  nf_target *target = gaussian_target();
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 0.01);
  nf_rng rng = seeded(73);
  nf_objective ml = nf_objective_max_likelihood(), bad = nf_objective_reverse_kl(target);
  nf_trainer_opts o = {.batch_size = 8, .iterations = 1, .objective = &ml};
  ck_assert_ptr_null(nf_trainer_new(flow, adam, NULL, NULL, &o, &rng));
  ck_assert_msg(strstr(nf_errmsg(), "the objective has a data term"), "%s", nf_errmsg());
  bad.reverse_kl_weight = NAN;
  o.objective = &bad;
  ck_assert_ptr_null(nf_trainer_new(flow, adam, NULL, NULL, &o, &rng));
  ck_assert_msg(strstr(nf_errmsg(), "reverse_kl_weight is nan"), "%s", nf_errmsg());
  bad = nf_objective_reverse_kl(NULL);
  ck_assert_ptr_null(nf_trainer_new(flow, adam, NULL, NULL, &o, &rng));
  ck_assert_msg(strstr(nf_errmsg(), "no target"), "%s", nf_errmsg());
  nf_target *wide = nf_target_phi4(2, 1.0, 1.0); /* 4-D */
  bad = nf_objective_reverse_kl(wide);
  ck_assert_ptr_null(nf_trainer_new(flow, adam, NULL, NULL, &o, &rng));
  ck_assert_int_eq(nf_last_status(), NF_EDIM);
  nf_flow *cond = coupling_flow(1);
  nf_adam *cadam = adam_lr(cond, 0.01);
  bad = nf_objective_reverse_kl(target);
  ck_assert_ptr_null(nf_trainer_new(cond, cadam, NULL, NULL, &o, &rng));
  ck_assert_msg(strstr(nf_errmsg(), "need an unconditional flow"), "%s", nf_errmsg());
  nf_adam_free(cadam);
  nf_flow_free(cond);
  nf_target_free(wide);
  nf_adam_free(adam);
  nf_flow_free(flow);
  nf_target_free(target);
}
END_TEST

/* A mixed objective, 1/2 NLL of the data + 1/2 reverse KL against the data's
   own density: both terms pull to the same Gaussian, so the fit lands on it. */
START_TEST(test_mixed_objective_fit)
{
  nf_target *target = gaussian_target();
  nf_dataset train = gaussian_data(4000, 74);
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 0.02);
  nf_objective mixed = nf_objective_reverse_kl(target);
  mixed.nll_weight = 0.5;
  mixed.reverse_kl_weight = 0.5;
  nf_trainer_opts o = {.batch_size = 128, .iterations = 600, .objective = &mixed,
                       .schedule = NF_LR_COSINE, .lr_min = 1e-4};
  nf_rng rng = seeded(75);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, NULL, &o, &rng);
  ck_assert_msg(tr != NULL, "%s", nf_errmsg());
  nf_train_report rep;
  ck_assert_int_eq(nf_trainer_run(tr, &rep), NF_OK);
  for (size_t j = 0; j < D; j++) {
    ck_assert_double_eq_tol(nf_flow_params(flow)[j], MU[j], 0.05);
    ck_assert_double_eq_tol(exp(nf_flow_params(flow)[D + j]) / SD[j], 1.0, 0.03);
  }
  ck_assert(rep.epochs < rep.iterations); /* epochs over the 4000 data rows */
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
  nf_target_free(target);
}
END_TEST

START_TEST(test_enum_names)
{
  nf_lr_schedule sch = NF_LR_CONSTANT;
  ck_assert_str_eq(nf_lr_schedule_name(NF_LR_COSINE), "cosine");
  ck_assert_int_eq(nf_lr_schedule_parse("cosine", &sch), NF_OK);
  ck_assert_int_eq(sch, NF_LR_COSINE);
  ck_assert_int_eq(nf_lr_schedule_parse("linear", &sch), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "expected constant, cosine"));
  ck_assert_int_eq(sch, NF_LR_COSINE);
  ck_assert_str_eq(nf_lr_schedule_name((nf_lr_schedule)7), "?");
  ck_assert_str_eq(nf_train_stop_name(NF_STOP_PATIENCE), "patience");
  ck_assert_str_eq(nf_train_stop_name((nf_train_stop)9), "?");
}
END_TEST

int main(void)
{
  Suite *s = suite_create("trainer");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_full_batch_reaches_mle);
  tcase_add_test(tc, test_diag_normal_fit);
  tcase_add_test(tc, test_affine_fit);
  tcase_add_test(tc, test_epoch_loss_covers_every_row);
  tcase_add_test(tc, test_same_seed_bit_identical);
  tcase_add_test(tc, test_callback_and_early_stop);
  tcase_add_test(tc, test_nonfinite_step);
  tcase_add_test(tc, test_restore_best);
  tcase_add_test(tc, test_patience);
  tcase_add_test(tc, test_curve_csv);
  tcase_add_test(tc, test_checkpoint_resume);
  tcase_add_test(tc, test_checkpoint_refusals);
  tcase_add_test(tc, test_divergence_flag);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_cosine_schedule);
  tcase_add_test(tc, test_conditional_fit);
  tcase_add_test(tc, test_conditional_rows_stay_paired);
  tcase_add_test(tc, test_conditional_context_errors);
  tcase_add_test(tc, test_enum_names);
  tcase_add_test(tc, test_reverse_kl_fit);
  tcase_add_test(tc, test_reverse_kl_resume);
  tcase_add_test(tc, test_objective_refusals);
  tcase_add_test(tc, test_mixed_objective_fit);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
