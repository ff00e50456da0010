/* tests/test_threads.c — the worker pool, threaded flow workspaces (the
   batch split into slices; the CNF's rows split inside its solve) and the
   threaded trainer: the same thread count is bit for bit reproducible, other
   counts agree with one thread to 1e-12 relative, failures reach the caller. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "nflow.h"
#include "nflow/layer_impl.h"

#define REL 1e-12

/* ---- the pool ---- */

typedef struct pool_rec {
  size_t worker[64];
  double out[64];
  size_t fail_a, fail_b; /* tasks that fail (SIZE_MAX: none) */
} pool_rec;

/* Records its worker and i^2; tasks fail_a and fail_b fail with their own message. */
static nf_status rec_task(size_t i, size_t worker, void *user)
{
  pool_rec *r = user;
  r->worker[i] = worker;
  r->out[i] = (double)(i * i);
  if (i == r->fail_a) return nf_set_error(NF_EDOMAIN, "task %zu failed", i);
  if (i == r->fail_b) return nf_set_error(NF_ENOCONV, "task %zu failed", i);
  return NF_OK;
}

START_TEST(test_pool_basics)
{
  ck_assert_ptr_null(nf_pool_new(0));
  ck_assert_int_eq(nf_last_status(), NF_EINVAL);
  ck_assert_ptr_null(nf_pool_new(NF_MAX_THREADS + 1));
  ck_assert_int_eq(nf_last_status(), NF_EINVAL);
  ck_assert_uint_eq(nf_pool_threads(NULL), 1);
  for (size_t T = 1; T <= 4; T++) {
    nf_pool *pool = nf_pool_new(T);
    ck_assert_ptr_nonnull(pool);
    ck_assert_uint_eq(nf_pool_threads(pool), T);
    ck_assert_int_eq(nf_pool_run(pool, 0, rec_task, NULL), NF_EINVAL);
    ck_assert_int_eq(nf_pool_run(pool, 3, NULL, NULL), NF_EINVAL);
    for (int rep = 0; rep < 20; rep++) {
      pool_rec r = {.fail_a = SIZE_MAX, .fail_b = SIZE_MAX};
      ck_assert_int_eq(nf_pool_run(pool, 37, rec_task, &r), NF_OK);
      for (size_t i = 0; i < 37; i++) {
        ck_assert_uint_eq(r.worker[i], i % T);
        ck_assert(r.out[i] == (double)(i * i));
      }
    }
    /* the lowest failing task's status and message reach the caller, whatever ran first */
    pool_rec r = {.fail_a = 11, .fail_b = 6};
    ck_assert_int_eq(nf_pool_run(pool, 20, rec_task, &r), NF_ENOCONV);
    ck_assert_str_eq(nf_errmsg(), "task 6 failed");
    ck_assert_int_eq(nf_last_status(), NF_ENOCONV);
    nf_pool_free(pool);
  }
  pool_rec r = {.fail_a = 3, .fail_b = SIZE_MAX};
  ck_assert_int_eq(nf_pool_run(NULL, 5, rec_task, &r), NF_EDOMAIN);
  ck_assert_str_eq(nf_errmsg(), "task 3 failed");
  nf_pool_free(NULL);
}
END_TEST

typedef struct pool_user {
  nf_pool *pool;
  int ok;
} pool_user;

/* 200 runs on a shared pool, each checked. */
static void *pool_user_run(void *arg)
{
  pool_user *u = arg;
  u->ok = 1;
  for (int rep = 0; rep < 200; rep++) {
    pool_rec r = {.fail_a = SIZE_MAX, .fail_b = SIZE_MAX};
    if (nf_pool_run(u->pool, 23, rec_task, &r) != NF_OK) u->ok = 0;
    for (size_t i = 0; i < 23; i++)
      if (r.out[i] != (double)(i * i) || r.worker[i] != i % 3) u->ok = 0;
  }
  return NULL;
}

START_TEST(test_pool_shared)
{
  nf_pool *pool = nf_pool_new(3);
  ck_assert_ptr_nonnull(pool);
  pool_user u[2] = {{pool, 0}, {pool, 0}};
  pthread_t tid[2];
  for (int t = 0; t < 2; t++) ck_assert_int_eq(pthread_create(&tid[t], NULL, pool_user_run, &u[t]), 0);
  for (int t = 0; t < 2; t++) ck_assert_int_eq(pthread_join(tid[t], NULL), 0);
  ck_assert(u[0].ok && u[1].ok);
  nf_pool_free(pool);
}
END_TEST

/* ---- flows ---- */

/* Everything one workspace computes for a batch. */
typedef struct results {
  double *logp, *g_x, *g_theta, *grad, *vjp_logp, *vjp_g_x, *vjp_theta, *xs, *ls, *sx, *sq, *sg, *tz;
  double nll, nll2, pen;
} results;

static size_t n_values(size_t n, size_t d, size_t np) { return 6 * n + 6 * n * d + 3 * np + 8; }

/* Carves a results record out of one buffer (so memcmp covers it all). */
static results carve(double *buf, size_t n, size_t d, size_t np)
{
  results r;
  double *p = buf + 8;
  r.logp = p; p += n;
  r.g_x = p; p += n * d;
  r.g_theta = p; p += np;
  r.grad = p; p += np;
  r.vjp_logp = p; p += n;
  r.vjp_g_x = p; p += n * d;
  r.vjp_theta = p; p += np;
  r.xs = p; p += n * d;
  r.ls = p; p += n;
  r.sx = p; p += n * d;
  r.sq = p; p += n;
  r.sg = p; p += n;
  r.tz = p; p += n * d;
  (void)p;
  return r;
}

/* The loss of sample_grad: L = sum_i (|x_i|^2 / 2 + log q_i) / n. */
static nf_status cot(size_t n, size_t dim, const double *x, const double *log_q, double *g_x,
                     double *g_log_q, void *user)
{
  (void)log_q;
  (void)user;
  for (size_t k = 0; k < n * dim; k++) g_x[k] = x[k] / (double)n;
  for (size_t i = 0; i < n; i++) g_log_q[i] = 1.0 / (double)n;
  return NF_OK;
}

/* Runs every verb on n rows with a workspace of T threads into buf. */
static void run_all(const nf_flow *flow, size_t T, size_t n, const double *x, const double *eps,
                    double *buf)
{
  size_t d = nf_flow_dim(flow), np = nf_flow_n_params(flow);
  memset(buf, 0, n_values(n, d, np) * sizeof *buf);
  results r = carve(buf, n, d, np);
  nf_flow_ws *ws = nf_flow_ws_new_threads(flow, n, T);
  ck_assert_msg(ws != NULL, "%s", nf_errmsg());
  ck_assert_uint_eq(nf_flow_ws_threads(ws), T);
  double *g_logp = th_random_points(n, 1, 99, 1.0);
  nf_rng rng;
  nf_rng_seed(&rng, 5);
#define OK(call) ck_assert_msg((call) == NF_OK, "T=%zu: %s", T, nf_errmsg())
  OK(nf_flow_log_prob_ws(flow, ws, 3, n, x, NULL, r.logp));
  OK(nf_flow_nll_ws(flow, ws, 3, n, x, NULL, &buf[0]));
  OK(nf_flow_nll_grad_ws(flow, ws, 3, n, x, NULL, &buf[1], r.grad, &buf[2]));
  OK(nf_flow_log_prob_vjp_ws(flow, ws, 3, n, x, NULL, g_logp, r.vjp_logp, r.vjp_g_x, NULL,
                             r.vjp_theta));
  OK(nf_flow_log_prob_grad_ws(flow, ws, 3, n, x, NULL, &buf[3], r.g_x, NULL));
  OK(nf_flow_sample_ws(flow, ws, &rng, n, NULL, r.xs, r.ls));
  OK(nf_flow_sample_grad_ws(flow, ws, 3, n, eps, NULL, cot, NULL, r.sx, r.sq, NULL, r.g_theta));
  OK(nf_flow_transform_ws(flow, ws, 3, NF_INVERSE, n, x, NULL, r.tz, r.sg));
#undef OK
  free(g_logp);
  nf_flow_ws_free(ws);
}

/* Same T twice (two workspaces) bit for bit; T = 2, 3 against T = 1 to REL. */
static void check_flow(const char *label, const nf_flow *flow, size_t n)
{
  size_t d = nf_flow_dim(flow), np = nf_flow_n_params(flow), nv = n_values(n, d, np);
  double *x = th_random_points(n, d, 17, 1.0), *eps = th_random_points(n, d, 23, 1.0);
  double *ref = malloc(nv * sizeof *ref), *a = malloc(nv * sizeof *a), *b = malloc(nv * sizeof *b);
  ck_assert(ref && a && b);
  run_all(flow, 1, n, x, eps, ref);
  for (size_t T = 2; T <= 3; T++) {
    run_all(flow, T, n, x, eps, a);
    run_all(flow, T, n, x, eps, b);
    ck_assert_msg(memcmp(a, b, nv * sizeof *a) == 0, "%s n=%zu: T=%zu not reproducible", label,
                  n, T);
    results ra = carve(a, n, d, np), rr = carve(ref, n, d, np);
    struct { const char *what; const double *u, *v; size_t len; } parts[] = {
      {"nll, grad's nll, penalty", a, ref, 3}, {"logp", ra.logp, rr.logp, n},
      {"g_x", ra.g_x, rr.g_x, n * d}, {"nll_grad", ra.grad, rr.grad, np},
      {"vjp logp", ra.vjp_logp, rr.vjp_logp, n}, {"vjp g_x", ra.vjp_g_x, rr.vjp_g_x, n * d},
      {"vjp g_theta", ra.vjp_theta, rr.vjp_theta, np}, {"sample x", ra.xs, rr.xs, n * d},
      {"sample logp", ra.ls, rr.ls, n}, {"sample_grad x", ra.sx, rr.sx, n * d},
      {"sample_grad log_q", ra.sq, rr.sq, n}, {"sample_grad g_theta", ra.g_theta, rr.g_theta, np},
      {"transform logdet", ra.sg, rr.sg, n}, {"transform z", ra.tz, rr.tz, n * d}};
    for (size_t q = 0; q < sizeof parts / sizeof parts[0]; q++) {
      double e = th_rel_err(parts[q].len, parts[q].u, parts[q].v, 1e-300);
      ck_assert_msg(e <= REL, "%s n=%zu T=%zu: %s differs from 1 thread by %g relative", label,
                    n, T, parts[q].what, e);
    }
  }
  free(x);
  free(eps);
  free(ref);
  free(a);
  free(b);
}

/* A small recipe flow on R^dim (2 layers, hidden 16,16) drawn from rng. */
static nf_flow *small_flow(nf_recipe_kind kind, size_t dim, nf_rng *rng)
{
  static const size_t hidden[] = {16, 16};
  nf_recipe r = nf_recipe_defaults(kind);
  r.layers = 2;
  r.n_hidden = 2;
  r.hidden = hidden;
  nf_flow *flow = nf_recipe_build(dim, 0, &r, rng);
  ck_assert_msg(flow != NULL, "%s", nf_errmsg());
  return flow;
}

/* small_flow on R^3 from seed 42, parameters perturbed. */
static nf_flow *recipe_flow(nf_recipe_kind kind)
{
  nf_rng rng;
  nf_rng_seed(&rng, 42);
  nf_flow *flow = small_flow(kind, 3, &rng);
  th_perturb_flow(flow, &rng, 0.05);
  return flow;
}

START_TEST(test_recipes_split)
{
  const nf_recipe_kind kinds[] = {NF_RECIPE_REALNVP, NF_RECIPE_MAF, NF_RECIPE_NSF,
                                  NF_RECIPE_GLOW, NF_RECIPE_RESFLOW};
  for (size_t q = 0; q < sizeof kinds / sizeof kinds[0]; q++) {
    nf_flow *flow = recipe_flow(kinds[q]);
    check_flow(nf_recipe_name(kinds[q]), flow, 37);
    check_flow(nf_recipe_name(kinds[q]), flow, 256);
    nf_flow_free(flow);
  }
}
END_TEST

/* A 2-D CNF (hidden 16,16, RNODE kinetic term) with the given trace. */
static nf_flow *cnf_flow(nf_trace_kind trace)
{
  static const size_t hidden[] = {16, 16};
  nf_cnf_opts o = nf_cnf_defaults();
  o.n_hidden = 2;
  o.hidden = hidden;
  o.trace = trace;
  o.kinetic_weight = 0.01;
  nf_rng rng;
  nf_rng_seed(&rng, 7);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_cnf_new(2, 0, &o, &rng)), NF_OK);
  th_perturb_flow(flow, &rng, 0.1);
  return flow;
}

/* One solve per call on a threaded workspace: the flow does not split a CNF
   (nor one inside the inverse wrapper); the CNF splits its rows instead. */
static void check_one_solve(nf_flow *flow, const nf_layer *cnf)
{
  size_t n = 64;
  double *x = th_random_points(n, 2, 4, 1.0), logp[64];
  nf_cnf_counters c;
  nf_flow_ws *ws = nf_flow_ws_new_threads(flow, n, 2);
  ck_assert_int_eq(nf_cnf_reset_counters(cnf), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, ws, 0, n, x, NULL, logp), NF_OK);
  ck_assert_int_eq(nf_cnf_get_counters(cnf, &c), NF_OK);
  ck_assert_uint_eq(c.solves, 1);
  nf_flow_ws_free(ws);
  free(x);
}

START_TEST(test_cnf_rows_split)
{
  nf_rng rng;
  nf_rng_seed(&rng, 2);
  nf_cnf_opts o = nf_cnf_defaults();
  static const size_t hidden[] = {8};
  o.n_hidden = 1;
  o.hidden = hidden;
  nf_layer *plain = nf_cnf_new(2, 0, &o, &rng), *inner = nf_cnf_new(2, 0, &o, &rng);
  nf_flow *f1 = nf_flow_new(2, 0, NF_BASE_STD_NORMAL), *f2 = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(f1, plain), NF_OK);
  ck_assert_int_eq(nf_flow_push(f2, nf_inverse_new(inner)), NF_OK);
  check_one_solve(f1, plain);
  check_one_solve(f2, inner);
  nf_flow_free(f1);
  nf_flow_free(f2);

  const nf_trace_kind traces[] = {NF_TRACE_EXACT, NF_TRACE_RADEMACHER};
  for (size_t q = 0; q < 2; q++) {
    nf_flow *flow = cnf_flow(traces[q]);
    check_flow(nf_cnf_trace_name(traces[q]), flow, 37);
    check_flow(nf_cnf_trace_name(traces[q]), flow, 256);
    nf_flow_free(flow);
  }
}
END_TEST

/* ---- a layer that fails at marked rows: the shift x + 1, refusing a row whose first entry exceeds 100 ---- */

static nf_status marked_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                              const double *in, const double *ctx, double *out, double *logdet,
                              const nf_apply_opts *opts, double *work)
{
  (void)theta; (void)ctx; (void)logdet; (void)work;
  size_t d = layer->dim;
  for (size_t i = 0; i < n; i++)
    if (in[i * d] > 100) return nf_set_error(NF_EDOMAIN, "marked row %zu", opts->row0 + i);
  for (size_t k = 0; k < n * d; k++) out[k] = in[k] + (dir == NF_FORWARD ? 1.0 : -1.0);
  return NF_OK;
}

/* Its pullback: g_in = g_out. */
static nf_status marked_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                            const double *in, const double *ctx, const double *out,
                            const double *g_out, const double *g_logdet, double *g_in,
                            double *g_ctx, double *g_theta, double *work)
{
  (void)theta; (void)dir; (void)in; (void)ctx; (void)out; (void)g_logdet; (void)g_ctx;
  (void)g_theta; (void)work;
  if (g_in) memcpy(g_in, g_out, n * layer->dim * sizeof *g_in);
  return NF_OK;
}

static const nf_layer_type marked_type = {.name = "test_marked", .apply = marked_apply,
                                          .vjp = marked_vjp};

START_TEST(test_slice_failure)
{
  size_t n = 37, d = 2;
  nf_flow *flow = nf_flow_new(d, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_layer_create(&marked_type, d, 0, 0, NULL)), NF_OK);
  double *x = th_random_points(n, d, 1, 1.0), logp[37];
  x[20 * d] = 1e3; /* slice 1 of 3: rows 13 to 24 */
  x[30 * d] = 1e3; /* slice 2: rows 25 to 36 */
  for (size_t i = 0; i < n; i++) logp[i] = -7.0;
  nf_flow_ws *ws = nf_flow_ws_new_threads(flow, n, 3);
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, ws, 0, n, x, NULL, logp), NF_EDOMAIN);
  ck_assert_msg(strstr(nf_errmsg(), "rows 13 to 24") && strstr(nf_errmsg(), "marked row 20"),
                "%s", nf_errmsg());
  for (size_t i = 0; i < n; i++) ck_assert(logp[i] == -7.0); /* all or nothing */
  double nll, grad[1];
  ck_assert_int_eq(nf_flow_nll_grad_ws(flow, ws, 0, n, x, NULL, &nll, grad, NULL), NF_EDOMAIN);
  ck_assert_msg(strstr(nf_errmsg(), "marked row 20"), "%s", nf_errmsg());
  x[20 * d] = 0;
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, ws, 0, n, x, NULL, logp), NF_EDOMAIN);
  ck_assert_msg(strstr(nf_errmsg(), "rows 25 to 36") && strstr(nf_errmsg(), "marked row 30"),
                "%s", nf_errmsg());
  x[30 * d] = 0;
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, ws, 0, n, x, NULL, logp), NF_OK);
  nf_flow_ws_free(ws);
  nf_flow_free(flow);
  free(x);
}
END_TEST

START_TEST(test_refusals)
{
  nf_flow *flow = recipe_flow(NF_RECIPE_REALNVP);
  ck_assert_ptr_null(nf_flow_ws_new_threads(flow, 10, 0));
  ck_assert_int_eq(nf_last_status(), NF_EINVAL);
  ck_assert_ptr_null(nf_flow_ws_new_threads(flow, 10, NF_MAX_THREADS + 1));
  ck_assert_int_eq(nf_last_status(), NF_EINVAL);
  ck_assert_ptr_null(nf_flow_ws_new_threads(NULL, 10, 2));
  ck_assert_ptr_null(nf_flow_ws_new_threads(flow, 0, 2));
  ck_assert_int_eq(nf_flow_set_threads(flow, 0), NF_EINVAL);
  ck_assert_int_eq(nf_flow_set_threads(flow, NF_MAX_THREADS + 1), NF_EINVAL);
  ck_assert_int_eq(nf_flow_set_threads(NULL, 2), NF_EINVAL);
  ck_assert_uint_eq(nf_flow_ws_threads(NULL), 0);
  /* the plain calls with threads agree with the serial ones */
  size_t n = 1000;
  double *x = th_random_points(n, 3, 8, 1.0), *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
  ck_assert_int_eq(nf_flow_log_prob(flow, n, x, NULL, a), NF_OK);
  ck_assert_int_eq(nf_flow_set_threads(flow, 2), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob(flow, n, x, NULL, b), NF_OK);
  ck_assert_double_le(th_rel_err(n, b, a, 1e-300), REL);
  nf_trainer_opts o = nf_trainer_defaults();
  o.threads = NF_MAX_THREADS + 1;
  nf_dataset *data = nf_dataset_new(n, 3);
  memcpy(data->x, x, n * 3 * sizeof *x);
  nf_adam *adam = nf_adam_new(nf_flow_n_params(flow), NULL);
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  ck_assert_ptr_null(nf_trainer_new(flow, adam, data, NULL, &o, &rng));
  ck_assert_int_eq(nf_last_status(), NF_EINVAL);
  nf_adam_free(adam);
  nf_dataset_free(data);
  free(x);
  free(a);
  free(b);
  nf_flow_free(flow);
}
END_TEST

/* ---- the trainer ---- */

/* theta of a small flow on R^2 after `iters` steps (batch 100, validation every 10) with `threads`. */
static double *train_theta(size_t threads, size_t iters, nf_recipe_kind kind, size_t *np_out)
{
  nf_rng rng;
  nf_rng_seed(&rng, 3);
  nf_flow *flow = small_flow(kind, 2, &rng);
  nf_dataset *train = NULL, *val = NULL;
  ck_assert_int_eq(nf_toy_sample("moons", 500, &rng, &train), NF_OK);
  ck_assert_int_eq(nf_toy_sample("moons", 300, &rng, &val), NF_OK);
  nf_adam *adam = nf_adam_new(nf_flow_n_params(flow), NULL);
  nf_trainer_opts o = nf_trainer_defaults();
  o.batch_size = 100;
  o.iterations = iters;
  o.val_every = 10;
  o.threads = threads;
  nf_trainer *tr = nf_trainer_new(flow, adam, train, val, &o, &rng);
  ck_assert_msg(tr != NULL, "%s", nf_errmsg());
  nf_train_report rep;
  ck_assert_msg(nf_trainer_run(tr, &rep) == NF_OK, "%s", nf_errmsg());
  size_t np = nf_flow_n_params(flow);
  *np_out = np;
  double *theta = malloc(np * sizeof *theta);
  memcpy(theta, nf_flow_params(flow), np * sizeof *theta);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_dataset_free(train);
  nf_dataset_free(val);
  nf_flow_free(flow);
  return theta;
}

/* 20 steps of batch 100 (validation every 10): threads = 2 twice bit for bit,
   and threads = 1 within REL (after 20 Adam steps rounding differences grow
   a little, still far below 1e-12 here). */
START_TEST(test_trainer_threads)
{
  const nf_recipe_kind kinds[] = {NF_RECIPE_REALNVP, NF_RECIPE_MAF};
  for (size_t q = 0; q < 2; q++) {
    size_t np;
    double *t1 = train_theta(1, 20, kinds[q], &np), *t2 = train_theta(2, 20, kinds[q], &np);
    double *t2b = train_theta(2, 20, kinds[q], &np);
    ck_assert_msg(memcmp(t2, t2b, np * sizeof *t2) == 0, "%s: threads=2 not reproducible",
                  nf_recipe_name(kinds[q]));
    double e = th_rel_err(np, t2, t1, 1e-300);
    ck_assert_msg(e <= REL, "%s: threads=2 vs 1 differ by %g relative", nf_recipe_name(kinds[q]), e);
    free(t1);
    free(t2);
    free(t2b);
  }
}
END_TEST

int main(void)
{
  const TTest *tests[] = {test_pool_basics, test_pool_shared, test_recipes_split,
                          test_cnf_rows_split, test_slice_failure, test_refusals,
                          test_trainer_threads, NULL};
  return th_run_tests("threads", 0, tests);
}
