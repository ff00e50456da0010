/* tests/test_trainer.c — maximum-likelihood training of small flows on
   Gaussian data whose maximum-likelihood answer is known in closed form. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Differential entropy of N(MU, diag(SD^2)): 0.5 d log(2 pi e) + sum log SD_j. */
static double true_entropy(void)
{
  double h = 0.5 * D * LOG_2PI_E;
  for (size_t j = 0; j < D; j++) h += log(SD[j]);
  return h;
}

/* Mean NLL of ds under the true data density. */
static double true_nll(const nf_dataset *ds)
{
  double s = 0;
  for (size_t i = 0; i < ds->n; i++)
    for (size_t j = 0; j < D; j++) {
      double u = (ds->x[i * D + j] - MU[j]) / SD[j];
      s += 0.5 * u * u + log(SD[j]) + 0.5 * (LOG_2PI_E - 1.0);
    }
  return s / (double)ds->n;
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

/* Trains flow on train (validating on val) with a halving lr schedule; returns the report. */
static nf_train_report train_scheduled(nf_flow *flow, const nf_dataset *train,
                                       const nf_dataset *val, size_t batch, size_t iters,
                                       double lr0, size_t half, uint64_t seed)
{
  nf_adam *adam = adam_lr(flow, lr0);
  cb_state s = new_cb_state(adam, lr0, half);
  nf_trainer_opts o = {.batch_size = batch, .iterations = iters, .val_every = 500,
                       .callback = schedule_cb, .user = &s};
  nf_rng rng = seeded(seed);
  nf_trainer *tr = nf_trainer_new(flow, adam, train, val, &o, &rng);
  ck_assert_msg(tr != NULL, "nf_trainer_new: %s", nf_errmsg());
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
  nf_train_report rep = train_scheduled(flow, &train, NULL, train.n, 6000, 0.05, 500, 7);
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
  nf_train_report rep = train_scheduled(flow, &train, &val, 100, 4000, 0.05, 400, 8);
  double mu[D], sigma[D], em, es;
  learned_gaussian(flow, mu, sigma);
  mle_errors(mu, sigma, &train, &em, &es);
  double h = true_entropy(), ref = true_nll(&val);
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

/* Trains a fresh diag-normal flow for 300 steps from seed; returns its parameters. */
static void train_seeded(uint64_t seed, double out[2 * D])
{
  nf_dataset train = gaussian_data(1000, 6);
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 0.01);
  nf_trainer_opts o = {.batch_size = 64, .iterations = 300};
  nf_rng rng = seeded(seed);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, NULL, &o, &rng);
  ck_assert_int_eq(nf_trainer_run(tr, NULL), NF_OK);
  memcpy(out, nf_flow_params(flow), 2 * D * sizeof *out);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(train.x);
}

START_TEST(test_same_seed_bit_identical)
{
  double a[2 * D], b[2 * D], c[2 * D];
  train_seeded(42, a);
  train_seeded(42, b);
  train_seeded(43, c);
  ck_assert_msg(memcmp(a, b, sizeof a) == 0, "same seed gave different parameters");
  ck_assert_msg(memcmp(a, c, sizeof a) != 0, "different seeds gave identical parameters");
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

/* A step whose NLL is not finite is refused and not counted; run reports it. */
START_TEST(test_nonfinite_step)
{
  nf_dataset train = gaussian_data(50, 12);
  nf_flow *flow = diag_flow();
  nf_adam *adam = adam_lr(flow, 0.01);
  nf_trainer_opts o = {.batch_size = 10, .iterations = 5};
  nf_rng rng = seeded(13);
  nf_trainer *tr = nf_trainer_new(flow, adam, &train, NULL, &o, &rng);
  ck_assert_int_eq(nf_trainer_step(tr, NULL), NF_OK);
  nf_flow_params(flow)[D] = INFINITY; /* sigma = inf */
  double keep[2 * D];
  memcpy(keep, nf_flow_params(flow), sizeof keep);
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
  nf_flow *flow = diag_flow(), *cond = nf_flow_new(D, 1, NF_BASE_DIAG_NORMAL);
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
    {cond, adam, &train, NULL, &o, &rng, "conditional"},
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
  nf_flow_free(cond);
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
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_cosine_schedule);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
