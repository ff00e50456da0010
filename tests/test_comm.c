/* tests/test_comm.c — data-parallel training over an in-process nf_comm:
   P threads, one trainer each over a shard of the rows, whose sum and bcast
   meet at a barrier. The global-batch arithmetic is checked against one
   trainer over all the rows; a failure on one rank against every rank. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "nflow/layer_impl.h"

#define MAXP 4

/* The ranks' meeting place: each publishes its buffer, all wait, all read. */
typedef struct group {
  pthread_barrier_t bar;
  size_t size;
  void *buf[MAXP];
} group;

typedef struct member {
  group *g;
  size_t rank;
} member;

/* v <- v_0 + v_1 + ... in rank order, as libnflow-mpi's all-reduce. */
static nf_status fake_sum(double *v, size_t n, void *user)
{
  member *m = user;
  group *g = m->g;
  double *s = malloc((n ? n : 1) * sizeof *s);
  g->buf[m->rank] = v;
  pthread_barrier_wait(&g->bar);
  for (size_t i = 0; i < n; i++) {
    s[i] = ((double *)g->buf[0])[i];
    for (size_t r = 1; r < g->size; r++) s[i] += ((double *)g->buf[r])[i];
  }
  pthread_barrier_wait(&g->bar);
  memcpy(v, s, n * sizeof *s);
  free(s);
  return NF_OK;
}

static nf_status fake_bcast(void *buf, size_t bytes, size_t root, void *user)
{
  member *m = user;
  group *g = m->g;
  g->buf[m->rank] = buf;
  pthread_barrier_wait(&g->bar);
  if (m->rank != root) memcpy(buf, g->buf[root], bytes);
  pthread_barrier_wait(&g->bar);
  return NF_OK;
}

/* n x 2 rows of a correlated Gaussian from seed; row bad (if < n) set to 1e200. */
static double *data(size_t n, uint64_t seed, size_t bad)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  double *x = malloc(2 * n * sizeof *x);
  for (size_t i = 0; i < n; i++) {
    double a = nf_rng_normal(&rng), b = nf_rng_normal(&rng);
    x[2 * i] = 1.0 + 0.8 * a;
    x[2 * i + 1] = -0.5 + 0.6 * a + 0.5 * b * b;
  }
  if (bad < n) x[2 * bad] = 1e200;
  return x;
}

#define N_TRAIN 203
#define N_VAL 41
#define ITERS 30

/* One training run over rows [lo, hi) of train and [vlo, vhi) of val; the
   threads' (or the single run's) outcome. */
typedef struct job {
  nf_recipe_kind kind;
  double *train, *val;
  size_t lo, hi, vlo, vhi;
  member me;      /* me.g NULL: no communicator */
  nf_status st;   /* the run's status */
  char msg[512];  /* and message */
  double *theta;  /* the parameters reached (malloc'd) */
  size_t np;
  nf_train_report rep;
} job;

static void *run_job(void *arg)
{
  job *j = arg;
  nf_rng rng;
  nf_rng_seed(&rng, 7);
  nf_recipe r = nf_recipe_defaults(j->kind);
  size_t hidden[] = {16, 16};
  r.layers = 4, r.n_hidden = 2, r.hidden = hidden;
  nf_flow *flow = nf_recipe_build(2, 0, &r, &rng);
  j->np = nf_flow_n_params(flow);
  nf_adam_opts ao = nf_adam_defaults();
  ao.lr = 3e-3;
  nf_adam *adam = nf_adam_new(j->np, &ao);
  nf_dataset tr = {.n = j->hi - j->lo, .dim = 2, .x = j->train + 2 * j->lo, .is_view = 1};
  nf_dataset va = {.n = j->vhi - j->vlo, .dim = 2, .x = j->val + 2 * j->vlo, .is_view = 1};
  nf_trainer_opts o = nf_trainer_defaults();
  o.batch_size = 64, o.iterations = ITERS, o.val_every = 10, o.restore_best = 1;
  nf_trainer *t = nf_trainer_new(flow, adam, &tr, va.n ? &va : NULL, &o, &rng);
  ck_assert_ptr_nonnull(t);
  nf_comm comm = {j->me.rank, j->me.g ? j->me.g->size : 1, fake_sum, fake_bcast, &j->me};
  j->st = j->me.g ? nf_trainer_set_comm(t, &comm) : NF_OK;
  if (j->st == NF_OK) j->st = nf_trainer_run(t, &j->rep);
  snprintf(j->msg, sizeof j->msg, "%s", j->st ? nf_errmsg() : "");
  j->theta = malloc(j->np * sizeof *j->theta);
  memcpy(j->theta, nf_flow_params(flow), j->np * sizeof *j->theta);
  nf_trainer_free(t);
  nf_adam_free(adam);
  nf_flow_free(flow);
  return NULL;
}

/* Runs P ranks over the shards (row counts split as evenly as P allows). */
static void run_ranks(size_t P, job *base, job *out)
{
  group g = {.size = P};
  pthread_barrier_init(&g.bar, NULL, (unsigned)P);
  pthread_t th[MAXP];
  for (size_t r = 0; r < P; r++) {
    out[r] = *base;
    out[r].lo = N_TRAIN * r / P, out[r].hi = N_TRAIN * (r + 1) / P;
    out[r].vlo = N_VAL * r / P, out[r].vhi = N_VAL * (r + 1) / P;
    out[r].me = (member){&g, r};
    pthread_create(&th[r], NULL, run_job, &out[r]);
  }
  for (size_t r = 0; r < P; r++) pthread_join(th[r], NULL);
  pthread_barrier_destroy(&g.bar);
}

/* P ranks reach the one-process theta to tol relative to max(|theta_i|, 1)
   (the split sums round differently; a parameter that an Adam step of size
   lr brought near 0 has no relative accuracy to speak of), bit-identical on
   every rank; the validation and training NLLs agree to 1e-10 relative (one
   of glow's batch losses rounds off 1e-11 apart). */
static void check_equal_to_one_process(nf_recipe_kind kind, size_t P, double tol)
{
  double *train = data(N_TRAIN, 1, SIZE_MAX), *val = data(N_VAL, 2, SIZE_MAX);
  job one = {.kind = kind, .train = train, .val = val, .hi = N_TRAIN, .vhi = N_VAL}, ranks[MAXP];
  run_job(&one);
  ck_assert_msg(one.st == NF_OK, "%s", one.msg);
  run_ranks(P, &one, ranks);
  double worst = 0;
  for (size_t r = 0; r < P; r++) {
    ck_assert_msg(ranks[r].st == NF_OK, "rank %zu: %s", r, ranks[r].msg);
    ck_assert_mem_eq(ranks[r].theta, ranks[0].theta, one.np * sizeof(double));
    ck_assert_uint_eq(ranks[r].rep.iterations, ITERS);
    ck_assert_uint_eq(ranks[r].rep.restored_iteration, one.rep.restored_iteration);
    ck_assert_msg(fabs(ranks[r].rep.val_nll_best - one.rep.val_nll_best) <=
                  1e-10 * fabs(one.rep.val_nll_best), "validation NLL %.17g, one process %.17g",
                  ranks[r].rep.val_nll_best, one.rep.val_nll_best);
    ck_assert_double_eq_tol(ranks[r].rep.train_loss, one.rep.train_loss,
                            1e-10 * fabs(one.rep.train_loss));
  }
  for (size_t i = 0; i < one.np; i++) {
    double a = one.theta[i], b = ranks[0].theta[i];
    worst = fmax(worst, fabs(a - b) / fmax(fabs(a), 1.0));
    ck_assert_msg(fabs(a - b) <= tol * fmax(fabs(a), 1.0),
                  "theta[%zu]: one process %.17g, %zu ranks %.17g", i, a, P, b);
  }
  printf("%s on %zu ranks: %zu parameters, largest difference %.3g x max(|theta|, 1)\n",
         nf_recipe_name(kind), P, one.np, worst);
  for (size_t r = 0; r < P; r++) free(ranks[r].theta);
  free(one.theta), free(train), free(val);
}

START_TEST(test_realnvp_equals_one_process)
{
  check_equal_to_one_process(NF_RECIPE_REALNVP, 2, 1e-12);
  check_equal_to_one_process(NF_RECIPE_REALNVP, 3, 1e-12);
}
END_TEST

/* Glow's actnorm initialises from the whole first global batch on every rank
   (were it initialised from a shard, theta would differ by O(lr)). Its
   shifts then have a zero gradient up to rounding, which Adam turns into
   steps of lr |dg| / eps ~ 1e-11 per step: the runs part at that level
   (measured: 6.7e-16 x max(|theta|, 1) on one rank of a communicator,
   2.8e-9 on three, over 30 steps); the tolerance is 1e-8. */
START_TEST(test_glow_data_init_equals_one_process)
{
  check_equal_to_one_process(NF_RECIPE_GLOW, 3, 1e-8);
}
END_TEST

/* A row in rank 1's shard whose NLL overflows: only rank 1's step fails, and
   every rank returns its status and message, at the same iteration. */
START_TEST(test_one_rank_fails_all_stop)
{
  double *train = data(N_TRAIN, 1, 150), *val = data(N_VAL, 2, SIZE_MAX);
  job base = {.kind = NF_RECIPE_REALNVP, .train = train, .val = val}, ranks[2];
  run_ranks(2, &base, ranks);
  for (size_t r = 0; r < 2; r++) {
    ck_assert_int_eq(ranks[r].st, NF_ENONFINITE);
    ck_assert_str_eq(ranks[r].msg, ranks[1].msg);
    ck_assert_mem_eq(ranks[r].theta, ranks[0].theta, ranks[0].np * sizeof(double));
  }
  for (size_t r = 0; r < 2; r++) free(ranks[r].theta);
  ck_assert_ptr_nonnull(strstr(ranks[0].msg, "rank 1's rows"));
  free(train), free(val);
}
END_TEST

/* nf_comm_agree: the lowest failing rank's status and message on every rank. */
typedef struct agree_job { member me; nf_status in, out; char msg[512]; } agree_job;

static void *run_agree(void *arg)
{
  agree_job *a = arg;
  nf_comm comm = {a->me.rank, a->me.g->size, fake_sum, fake_bcast, &a->me};
  if (a->in != NF_OK) nf_set_error(a->in, "rank %zu failed", a->me.rank);
  a->out = nf_comm_agree(&comm, a->in);
  snprintf(a->msg, sizeof a->msg, "%s", nf_errmsg());
  return NULL;
}

START_TEST(test_agree)
{
  nf_status cases[2][3] = {{NF_OK, NF_EDIM, NF_EIO}, {NF_OK, NF_OK, NF_OK}};
  for (int c = 0; c < 2; c++) {
    group g = {.size = 3};
    pthread_barrier_init(&g.bar, NULL, 3);
    agree_job a[3];
    pthread_t th[3];
    for (size_t r = 0; r < 3; r++) {
      a[r] = (agree_job){.me = {&g, r}, .in = cases[c][r]};
      pthread_create(&th[r], NULL, run_agree, &a[r]);
    }
    for (size_t r = 0; r < 3; r++) pthread_join(th[r], NULL);
    pthread_barrier_destroy(&g.bar);
    for (size_t r = 0; r < 3; r++) {
      ck_assert_int_eq(a[r].out, c == 0 ? NF_EDIM : NF_OK);
      if (c == 0) ck_assert_str_eq(a[r].msg, "rank 1 failed");
    }
  }
}
END_TEST

/* Bad communicators and calls are refused with a status. */
START_TEST(test_bad_calls)
{
  nf_rng rng;
  nf_rng_seed(&rng, 3);
  nf_recipe r = nf_recipe_defaults(NF_RECIPE_REALNVP);
  r.layers = 2;
  nf_flow *flow = nf_recipe_build(2, 0, &r, &rng);
  nf_adam *adam = nf_adam_new(nf_flow_n_params(flow), NULL);
  double *x = data(20, 4, SIZE_MAX);
  nf_dataset ds = {.n = 20, .dim = 2, .x = x, .is_view = 1};
  nf_trainer *t = nf_trainer_new(flow, adam, &ds, NULL, NULL, &rng);
  group g = {.size = 1};
  pthread_barrier_init(&g.bar, NULL, 1);
  member me = {&g, 0};
  nf_comm ok = {0, 1, fake_sum, fake_bcast, &me}, bad = ok;
  ck_assert_int_eq(nf_trainer_set_comm(t, NULL), NF_EINVAL);
  bad.sum = NULL;
  ck_assert_int_eq(nf_trainer_set_comm(t, &bad), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "sum"));
  bad = ok, bad.rank = 1;
  ck_assert_int_eq(nf_trainer_set_comm(t, &bad), NF_EINVAL);
  ck_assert_int_eq(nf_comm_agree(&bad, NF_OK), NF_EINVAL);
  ck_assert_int_eq(nf_trainer_set_comm(NULL, &ok), NF_EINVAL);
  ck_assert_int_eq(nf_trainer_set_comm(t, &ok), NF_OK);
  ck_assert_int_eq(nf_trainer_set_comm(t, &ok), NF_ESTATE);
  ck_assert_int_eq(nf_trainer_step(t, NULL), NF_OK);
  nf_trainer_free(t);
  t = nf_trainer_new(flow, adam, &ds, NULL, NULL, &rng);
  ck_assert_int_eq(nf_trainer_step(t, NULL), NF_OK);
  ck_assert_int_eq(nf_trainer_set_comm(t, &ok), NF_ESTATE);
  nf_trainer_free(t);
  pthread_barrier_destroy(&g.bar);
  nf_adam_free(adam);
  nf_flow_free(flow);
  free(x);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {test_realnvp_equals_one_process, test_glow_data_init_equals_one_process,
                          test_one_rank_fails_all_stop, test_agree, test_bad_calls, NULL};
  return th_run_tests("comm", 0, tests);
}
