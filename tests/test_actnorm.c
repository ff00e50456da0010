/* tests/test_actnorm.c — actnorm (Glow): the affine map with data-dependent
   initialisation. After nf_flow_init_from_data the rows' image at every
   actnorm layer has mean 0 and variance 1 per dimension (to 1e-12); the
   layer passes the bijector battery; initialised parameters save and load
   bit for bit; the trainer initialises a fresh flow at its first step and
   never a flow whose parameters were set, nor on resume. */
#define _GNU_SOURCE /* mkdtemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define TOL_MOMENTS 1e-12

enum { D = 3, N = 200 };

/* N x D rows with column j ~ N(2j - 1, (0.1 + j)^2), correlated through column 0. */
static double *data_rows(uint64_t seed)
{
  double *x = th_random_points(N, D, seed, 1.0);
  for (size_t i = 0; i < N; i++)
    for (size_t j = 0; j < D; j++)
      x[i * D + j] = (2.0 * (double)j - 1.0) + (0.1 + (double)j) * x[i * D + j] + 0.5 * x[i * D];
  return x;
}

/* Asserts each column of the n x D rows z has mean 0 and variance 1 to TOL_MOMENTS. */
static void expect_unit_moments(const char *label, size_t n, const double *z)
{
  double worst = 0;
  for (size_t j = 0; j < D; j++) {
    double m = 0, v = 0;
    for (size_t i = 0; i < n; i++) m += z[i * D + j] / (double)n;
    for (size_t i = 0; i < n; i++) v += (z[i * D + j] - m) * (z[i * D + j] - m) / (double)n;
    ck_assert_msg(fabs(m) <= TOL_MOMENTS && fabs(v - 1) <= TOL_MOMENTS,
                  "%s: column %zu has mean %.3g, variance - 1 = %.3g", label, j, m, v - 1);
    worst = fmax(worst, fmax(fabs(m), fabs(v - 1)));
  }
  printf("%s: max |mean|, |variance - 1| = %.2e\n", label, worst);
}

/* Sampling order [actnorm, LU, actnorm, LU]: both actnorms see different rows. */
static nf_flow *actnorm_flow(uint64_t seed)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_STD_NORMAL);
  for (int k = 0; k < 2; k++) {
    ck_assert_int_eq(nf_flow_push(flow, nf_actnorm_new(D)), NF_OK);
    ck_assert_int_eq(nf_flow_push(flow, nf_linear_lu_new(D, NULL, NF_DIAG_EXP, &rng)), NF_OK);
  }
  return flow;
}

/* The image of x at the output (towards z) of layer k. */
static void image_at(const nf_flow *flow, size_t k, const double *x, double *out)
{
  double *a = malloc(N * D * sizeof *a), *b = malloc(N * D * sizeof *b);
  memcpy(a, x, N * D * sizeof *a);
  for (size_t q = nf_flow_n_layers(flow); q-- > k;) {
    const nf_layer *layer = nf_flow_layer(flow, q);
    double *work = nf_layer_work_new(layer, N);
    ck_assert_int_eq(nf_layer_apply(layer, nf_flow_params(flow) + nf_flow_param_offset(flow, q),
                                    NF_INVERSE, N, a, NULL, b, NULL, NULL, work), NF_OK);
    nf_layer_work_free(layer, N, work);
    double *t = a;
    a = b;
    b = t;
  }
  memcpy(out, a, N * D * sizeof *out);
  free(a);
  free(b);
}

START_TEST(init_gives_unit_moments_at_every_actnorm)
{
  nf_flow *flow = actnorm_flow(1);
  double *x = data_rows(2), z[N * D];
  size_t np = nf_flow_n_params(flow);
  double *before = malloc(np * sizeof *before);
  memcpy(before, nf_flow_params(flow), np * sizeof *before);
  ck_assert(nf_flow_params_fresh(flow));
  ck_assert_msg(nf_flow_init_from_data(flow, N, x, NULL) == NF_OK, "%s", nf_errmsg());
  ck_assert(!nf_flow_params_fresh(flow));
  image_at(flow, 2, x, z);
  expect_unit_moments("actnorm layer 2 (first towards z)", N, z);
  image_at(flow, 0, x, z);
  expect_unit_moments("actnorm layer 0 (after an LU)", N, z);
  /* the LU layers keep their parameters */
  for (size_t k = 1; k < 4; k += 2)
    for (size_t p = nf_flow_param_offset(flow, k); p < nf_flow_param_offset(flow, k + 1); p++)
      ck_assert(nf_flow_params(flow)[p] == before[p]);
  free(before);
  free(x);
  nf_flow_free(flow);
}
END_TEST

/* A constant column (rounding-level spread) keeps scale 1 and is only centred;
   bad data is refused with the flow unchanged. */
START_TEST(constant_columns_and_bad_data)
{
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_actnorm_new(D)), NF_OK);
  double *x = data_rows(3);
  for (size_t i = 0; i < N; i++) x[i * D + 1] = 0.1;
  ck_assert_int_eq(nf_flow_init_from_data(flow, N, x, NULL), NF_OK);
  const double *theta = nf_flow_params(flow);
  ck_assert_double_eq(theta[D + 1], 0.0);
  ck_assert_double_le(fabs(theta[1] - 0.1), 1e-17);
  nf_flow_free(flow);

  flow = actnorm_flow(4);
  size_t np = nf_flow_n_params(flow);
  double *before = malloc(np * sizeof *before);
  memcpy(before, nf_flow_params(flow), np * sizeof *before);
  x[5 * D + 2] = NAN;
  ck_assert_int_eq(nf_flow_init_from_data(flow, N, x, NULL), NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 5, column 2"));
  for (size_t i = 0; i < N; i++) x[i * D + 2] = (i % 2 ? 1e306 : -1e306);
  ck_assert_int_eq(nf_flow_init_from_data(flow, N, x, NULL), NF_EDOMAIN);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "layer 2 ('actnorm')"));
  ck_assert_int_eq(nf_flow_init_from_data(flow, 0, x, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_flow_init_from_data(flow, N, NULL, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_flow_init_from_data(NULL, N, x, NULL), NF_EINVAL);
  ck_assert(memcmp(before, nf_flow_params(flow), np * sizeof *before) == 0);
  ck_assert(nf_flow_params_fresh(flow));
  free(before);
  nf_flow_free(flow);

  /* in a conditional flow actnorm receives ctx = NULL; the flow needs its ctx */
  flow = nf_flow_new(D, 2, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_actnorm_new(D)), NF_OK);
  free(x);
  x = data_rows(13);
  double *ctx = th_random_points(N, 2, 14, 1.0), z[N * D];
  ck_assert_int_eq(nf_flow_init_from_data(flow, N, x, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_flow_init_from_data(flow, N, x, ctx), NF_OK);
  ck_assert_int_eq(nf_flow_transform(flow, NF_INVERSE, N, x, ctx, z, NULL), NF_OK);
  expect_unit_moments("actnorm in a conditional flow", N, z);
  free(ctx);
  free(x);
  nf_flow_free(flow);
}
END_TEST

/* A case of the bijector battery: theta ~ N(0, 0.5^2) (the affine map). */
static nf_layer *actnorm_case(size_t d, uint64_t seed, int variant, size_t n, double *z,
                              double **theta)
{
  (void)variant;
  (void)n;
  (void)z;
  nf_layer *layer = nf_actnorm_new(d);
  *theta = th_random_theta(layer, seed, 0.5);
  return layer;
}

START_TEST(bijector_checks_and_bad_parameters)
{
  th_check_bijector_family("actnorm", actnorm_case, 0, 1.5);
  nf_flow *flow = actnorm_flow(5);
  th_check_param_refused(flow, 0, NAN, NF_ENONFINITE);
  th_check_param_refused(flow, D, 800.0, NF_EDOMAIN);
  double *x = data_rows(6);
  ck_assert_int_eq(nf_flow_init_from_data(flow, N, x, NULL), NF_OK);
  th_check_threads(flow, 40, x, NULL);
  free(x);
  nf_flow_free(flow);
  ck_assert_ptr_null(nf_actnorm_new(0));
}
END_TEST

/* Data-initialised parameters save and load bit for bit (log p too). */
START_TEST(save_load_is_bit_for_bit)
{
  nf_flow *flow = actnorm_flow(7);
  double *x = data_rows(8);
  ck_assert_int_eq(nf_flow_init_from_data(flow, N, x, NULL), NF_OK);
  nf_flow *copy = th_save_load(flow, N, x);
  ck_assert(!nf_flow_params_fresh(copy)); /* loaded: a trainer would not re-initialise */
  free(x);
  nf_flow_free(flow);
  nf_flow_free(copy);
}
END_TEST

/* A trainer over flow with one whole-set batch and a tiny learning rate (so
   one step barely moves theta), data_init as given. */
static nf_trainer *tiny_trainer(nf_flow *flow, nf_adam **adam, const nf_dataset *ds, int data_init,
                                size_t batch)
{
  nf_adam_opts ao = nf_adam_defaults();
  ao.lr = 1e-12;
  *adam = nf_adam_new(nf_flow_n_params(flow), &ao);
  nf_trainer_opts o = nf_trainer_defaults();
  ck_assert_int_eq(o.data_init, 1);
  o.data_init = data_init;
  o.batch_size = batch;
  nf_rng rng;
  nf_rng_seed(&rng, 21);
  nf_trainer *tr = nf_trainer_new(flow, *adam, ds, NULL, &o, &rng);
  ck_assert_msg(tr != NULL, "%s", nf_errmsg());
  return tr;
}

/* max |theta_a - theta_b| over the flows' parameters. */
static double param_gap(const nf_flow *a, const nf_flow *b)
{
  return th_max_abs_diff(nf_flow_n_params(a), nf_flow_params(a), nf_flow_params(b));
}

/* The rule of trainer.h: a fresh flow is initialised at the first step; data_init = 0,
   or parameters set before nf_trainer_new, keep theta. */
START_TEST(trainer_initialises_only_fresh_flows)
{
  double *x = data_rows(9);
  nf_dataset *ds = nf_dataset_view(N, D, x);
  nf_flow *want = actnorm_flow(10);
  ck_assert_int_eq(nf_flow_init_from_data(want, N, x, NULL), NF_OK);
  for (int c = 0; c < 3; c++) {
    nf_flow *flow = actnorm_flow(10), *fresh = actnorm_flow(10);
    if (c == 2) ck_assert_int_eq(nf_flow_set_params(flow, nf_flow_params(fresh)), NF_OK);
    nf_adam *adam;
    nf_trainer *tr = tiny_trainer(flow, &adam, ds, c != 1, N);
    ck_assert_msg(nf_trainer_step(tr, NULL) == NF_OK, "%s", nf_errmsg());
    double to_init = param_gap(flow, want), to_fresh = param_gap(flow, fresh);
    printf("trainer case %d: |theta - data init| = %.2e, |theta - fresh| = %.2e\n", c, to_init,
           to_fresh);
    if (c == 0) ck_assert_double_le(to_init, 1e-9); /* same moments, rows in another order */
    else ck_assert_double_le(to_fresh, 1e-9);
    ck_assert_double_ge(c == 0 ? to_fresh : to_init, 0.1);
    nf_trainer_free(tr);
    nf_adam_free(adam);
    nf_flow_free(flow);
    nf_flow_free(fresh);
  }
  nf_flow_free(want);
  nf_dataset_free(ds);
  free(x);
}
END_TEST

/* Resume: 3 steps, save, load into a new trainer over a fresh flow, 3 more
   steps = 6 steps straight, bit for bit (the loaded flow is not re-initialised). */
START_TEST(resume_does_not_reinitialise)
{
  char dir[] = "/tmp/nf_test_actnorm_XXXXXX", path[64];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/state.nfs", dir);
  double *x = data_rows(11);
  nf_dataset *ds = nf_dataset_view(N, D, x);
  nf_flow *a = actnorm_flow(12), *b = actnorm_flow(12);
  nf_adam *adam_a, *adam_b;
  nf_trainer *ta = tiny_trainer(a, &adam_a, ds, 1, 50), *tb = tiny_trainer(b, &adam_b, ds, 1, 50);
  for (int s = 0; s < 3; s++) ck_assert_int_eq(nf_trainer_step(ta, NULL), NF_OK);
  ck_assert_int_eq(nf_trainer_save_state(ta, path), NF_OK);
  ck_assert_msg(nf_trainer_load_state(tb, path) == NF_OK, "%s", nf_errmsg());
  for (int s = 0; s < 3; s++) {
    ck_assert_int_eq(nf_trainer_step(ta, NULL), NF_OK);
    ck_assert_int_eq(nf_trainer_step(tb, NULL), NF_OK);
  }
  ck_assert(memcmp(nf_flow_params(a), nf_flow_params(b), nf_flow_n_params(a) * sizeof(double)) == 0);
  printf("resume after 3 steps: 3 more steps equal to the straight run bit for bit\n");
  remove(path);
  rmdir(dir);
  nf_trainer_free(ta);
  nf_trainer_free(tb);
  nf_adam_free(adam_a);
  nf_adam_free(adam_b);
  nf_flow_free(a);
  nf_flow_free(b);
  nf_dataset_free(ds);
  free(x);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {init_gives_unit_moments_at_every_actnorm, constant_columns_and_bad_data,
                          bijector_checks_and_bad_parameters, save_load_is_bit_for_bit,
                          trainer_initialises_only_fresh_flows, resume_does_not_reinitialise,
                          NULL};
  return th_run_tests("actnorm", 0, tests);
}
