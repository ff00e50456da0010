/* tests/test_adam.c — Adam / AdamW: convergence on an ill-conditioned
   quadratic, the exact update formula, weight decay, clipping, bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define NQ 6

/* Gradient of f(x) = 0.5 sum_i a_i (x_i - c_i)^2. */
static void quad_grad(size_t n, const double *a, const double *c, const double *x,
                      double *g)
{
  for (size_t i = 0; i < n; i++) g[i] = a[i] * (x[i] - c[i]);
}

/* One hand-written Adam step on scalar state (m, v) at step t: the reference. */
static double ref_step(double p, double g, double *m, double *v, int t,
                       const nf_adam_opts *o)
{
  if (!o->decoupled) g += o->weight_decay * p;
  *m = o->beta1 * *m + (1 - o->beta1) * g;
  *v = o->beta2 * *v + (1 - o->beta2) * g * g;
  double mhat = *m / (1 - pow(o->beta1, t)), vhat = *v / (1 - pow(o->beta2, t));
  if (o->decoupled) p -= o->lr * o->weight_decay * p;
  return p - o->lr * mhat / (sqrt(vhat) + o->eps);
}

/* Takes `steps` steps with gradient g on a and on b, both from parameters p0
   (n of them), and asserts that they end bit-identical. */
static void expect_same_steps(nf_adam *a, nf_adam *b, size_t n, const double *p0,
                              const double *g, int steps)
{
  double *pa = malloc(n * sizeof *pa), *pb = malloc(n * sizeof *pb);
  memcpy(pa, p0, n * sizeof *pa);
  memcpy(pb, p0, n * sizeof *pb);
  for (int t = 0; t < steps; t++) {
    ck_assert_int_eq(nf_adam_step(a, pa, g), NF_OK);
    ck_assert_int_eq(nf_adam_step(b, pb, g), NF_OK);
  }
  ck_assert(memcmp(pa, pb, n * sizeof *pa) == 0);
  free(pa);
  free(pb);
}

START_TEST(test_defaults)
{
  nf_adam_opts o = nf_adam_defaults();
  ck_assert_double_eq(o.lr, 1e-3);
  ck_assert_double_eq(o.beta1, 0.9);
  ck_assert_double_eq(o.beta2, 0.999);
  ck_assert_double_eq(o.eps, 1e-8);
  ck_assert_double_eq(o.weight_decay, 0.0);
  ck_assert_double_eq(o.clip_norm, 0.0);
  nf_adam *adam = nf_adam_new(3, NULL);
  ck_assert_ptr_nonnull(adam);
  ck_assert_uint_eq(nf_adam_size(adam), 3);
  ck_assert_uint_eq(nf_adam_steps(adam), 0);
  ck_assert_double_eq(nf_adam_options(adam).lr, 1e-3);
  nf_adam_free(adam);
  nf_adam_free(NULL);
}
END_TEST

/* Curvatures spanning 4 decades: Adam's per-coordinate scaling must cope. */
START_TEST(test_quadratic_minimum)
{
  const double a[NQ] = {1e-2, 0.1, 1, 10, 50, 100};
  const double c[NQ] = {1, -2, 0.5, 3, -1, 0.25};
  double x[NQ] = {0}, g[NQ];
  nf_adam_opts o = nf_adam_defaults();
  o.lr = 0.05;
  nf_adam *adam = nf_adam_new(NQ, &o);
  ck_assert_ptr_nonnull(adam);
  /* Step-size schedule: lr halved every 1000 steps, so the iterates settle. */
  for (int t = 1; t <= 12000; t++) {
    quad_grad(NQ, a, c, x, g);
    ck_assert_int_eq(nf_adam_step(adam, x, g), NF_OK);
    if (t % 1000 == 0) ck_assert_int_eq(nf_adam_set_lr(adam, 0.5 * nf_adam_options(adam).lr), NF_OK);
  }
  double err = th_max_abs_diff(NQ, x, c);
  printf("quadratic: max |x - c| = %.3g after 12000 steps\n", err);
  ck_assert_msg(err < 1e-6, "max |x - c| = %.3g after 12000 steps", err);
  ck_assert_uint_eq(nf_adam_steps(adam), 12000);
  nf_adam_free(adam);
}
END_TEST

/* Several steps of every variant match the hand-computed bias-corrected update. */
static void check_against_reference(nf_adam_opts o)
{
  enum { N = 5, STEPS = 4 };
  nf_rng rng;
  nf_rng_seed(&rng, 11);
  double p[N], pref[N], g[N], gcopy[N], m[N] = {0}, v[N] = {0};
  th_randn(&rng, N, 1.0, p);
  memcpy(pref, p, sizeof p);
  nf_adam *adam = nf_adam_new(N, &o);
  ck_assert_ptr_nonnull(adam);
  double worst = 0;
  for (int t = 1; t <= STEPS; t++) {
    th_randn(&rng, N, 2.0, g);
    memcpy(gcopy, g, sizeof g);
    ck_assert_int_eq(nf_adam_step(adam, p, g), NF_OK);
    ck_assert_msg(memcmp(g, gcopy, sizeof g) == 0, "nf_adam_step modified grad");
    for (int i = 0; i < N; i++) pref[i] = ref_step(pref[i], g[i], &m[i], &v[i], t, &o);
    worst = fmax(worst, th_rel_err(N, p, pref, 1.0));
  }
  printf("reference update (wd %g, decoupled %d): max rel deviation %.3g\n",
         o.weight_decay, o.decoupled, worst);
  ck_assert_msg(worst < 1e-15, "relative deviation from the reference %.3g", worst);
  nf_adam_free(adam);
}

START_TEST(test_update_formula)
{
  nf_adam_opts o = nf_adam_defaults();
  o.lr = 0.1;
  check_against_reference(o);
  o.beta1 = 0.0; /* RMSProp with bias correction */
  o.beta2 = 0.5;
  check_against_reference(o);
  o = nf_adam_defaults();
  o.lr = 0.03;
  o.weight_decay = 0.2;
  check_against_reference(o);
  o.decoupled = 1;
  check_against_reference(o);
}
END_TEST

/* The first step from zero moments is lr * g / (|g| + eps) per coordinate. */
START_TEST(test_first_step_by_hand)
{
  nf_adam_opts o = nf_adam_defaults();
  o.lr = 0.25;
  nf_adam *adam = nf_adam_new(3, &o);
  double p[3] = {1, 2, 3}, g[3] = {0.5, -4, 1e-3};
  ck_assert_int_eq(nf_adam_step(adam, p, g), NF_OK);
  const double want[3] = {1 - 0.25 * 0.5 / (0.5 + 1e-8), 2 + 0.25 * 4 / (4 + 1e-8),
                          3 - 0.25 * 1e-3 / (1e-3 + 1e-8)};
  double err = th_rel_err(3, p, want, 1.0);
  ck_assert_msg(err < 1e-15, "first step off by %.3g", err);
  ck_assert_double_eq_tol(nf_adam_grad_norm(adam), sqrt(0.25 + 16 + 1e-6), 1e-15);
  nf_adam_free(adam);
}
END_TEST

/* With g = 0: L2 decay feeds lambda p through the moments (first step moves by
   lr * sign(p)), AdamW shrinks p by the factor (1 - lr lambda) only. */
START_TEST(test_weight_decay_variants)
{
  nf_adam_opts o = nf_adam_defaults();
  o.lr = 0.01;
  o.weight_decay = 0.5;
  double zero[2] = {0, 0};
  double pl2[2] = {4, -3}, pw[2] = {4, -3};
  nf_adam *l2 = nf_adam_new(2, &o);
  o.decoupled = 1;
  nf_adam *aw = nf_adam_new(2, &o);
  ck_assert_int_eq(nf_adam_step(l2, pl2, zero), NF_OK);
  ck_assert_int_eq(nf_adam_step(aw, pw, zero), NF_OK);
  /* L2: g = 0.5 p, mhat = g, vhat = g^2: step lr * g / (|g| + eps). */
  const double want_l2[2] = {4 - 0.01 * 2.0 / (2.0 + 1e-8), -3 + 0.01 * 1.5 / (1.5 + 1e-8)};
  const double want_w[2] = {4 * (1 - 0.01 * 0.5), -3 * (1 - 0.01 * 0.5)};
  ck_assert_msg(th_rel_err(2, pl2, want_l2, 1.0) < 1e-15, "L2 decay step wrong");
  ck_assert_msg(th_rel_err(2, pw, want_w, 1.0) < 1e-15, "decoupled decay step wrong");
  /* They differ: L2 moves both coordinates by ~lr, AdamW in proportion to |p|. */
  ck_assert(fabs(pl2[0] - pw[0]) > 0.9e-2 && fabs(pl2[1] - pw[1]) > 0.4e-2);
  nf_adam_free(l2);
  nf_adam_free(aw);
}
END_TEST

/* Clipping caps ||g||: steps with g of norm 13 clipped to norm 1 equal steps
   with g / 13 unclipped (two steps, so the moments see the applied gradient). */
START_TEST(test_clipping)
{
  enum { N = 4 };
  nf_adam_opts o = nf_adam_defaults();
  o.lr = 0.1;
  o.clip_norm = 1.0;
  const double g[2][N] = {{3, -4, 12, 0}, {0, 6, 0, -2.5}}; /* norms 13 and 6.5 */
  const double norms[2] = {13.0, 6.5};
  double p1[N] = {1, 1, 1, 1}, p2[N] = {1, 1, 1, 1}, gcopy[N], gs[N];
  nf_adam *clip = nf_adam_new(N, &o);
  o.clip_norm = 0;
  nf_adam *plain = nf_adam_new(N, &o);
  for (int t = 0; t < 2; t++) {
    for (int i = 0; i < N; i++) gs[i] = g[t][i] / norms[t];
    memcpy(gcopy, g[t], sizeof gcopy);
    ck_assert_int_eq(nf_adam_step(clip, p1, g[t]), NF_OK);
    ck_assert_int_eq(nf_adam_step(plain, p2, gs), NF_OK);
    ck_assert_msg(memcmp(g[t], gcopy, sizeof gcopy) == 0, "clipping modified grad");
    ck_assert_double_eq_tol(nf_adam_grad_norm(clip), norms[t], 1e-14);
  }
  double err = th_max_abs_diff(N, p1, p2);
  ck_assert_msg(err < 1e-15, "clipped vs pre-scaled gradient differ by %.3g", err);
  /* A gradient already under the cap is not rescaled. */
  const double small[N] = {0.1, 0.2, 0, 0}, zero[N] = {0};
  nf_adam_reset(clip);
  nf_adam_reset(plain);
  ck_assert_uint_eq(nf_adam_steps(clip), 0);
  expect_same_steps(clip, plain, N, zero, small, 3);
  nf_adam_free(clip);
  nf_adam_free(plain);
}
END_TEST

START_TEST(test_reset)
{
  double g[2] = {1, -2}, p1[2] = {0, 0};
  nf_adam *adam = nf_adam_new(2, NULL);
  nf_adam_step(adam, p1, g);
  nf_adam_step(adam, p1, g);
  nf_adam_reset(adam);
  ck_assert_uint_eq(nf_adam_steps(adam), 0);
  ck_assert_double_eq(nf_adam_grad_norm(adam), 0.0);
  nf_adam *fresh = nf_adam_new(2, NULL);
  const double half[2] = {0.5, 0.5};
  expect_same_steps(adam, fresh, 2, half, g, 1);
  nf_adam_free(adam);
  nf_adam_free(fresh);
}
END_TEST

START_TEST(test_nonfinite_gradient)
{
  double p[3] = {1, 2, 3}, keep[3] = {1, 2, 3};
  double g[3] = {1, 1, 1};
  nf_adam *adam = nf_adam_new(3, NULL);
  ck_assert_int_eq(nf_adam_step(adam, p, g), NF_OK);
  memcpy(keep, p, sizeof p);
  double bad[2][3] = {{0.1, NAN, 0.2}, {INFINITY, 0, 0}};
  for (int k = 0; k < 2; k++) {
    ck_assert_int_eq(nf_adam_step(adam, p, bad[k]), NF_ENONFINITE);
    ck_assert(memcmp(p, keep, sizeof p) == 0);
    ck_assert_uint_eq(nf_adam_steps(adam), 1);
    ck_assert(strstr(nf_errmsg(), "gradient") != NULL);
  }
  /* The refused steps left the moments alone: next step equals a clean run's. */
  nf_adam *clean = nf_adam_new(3, NULL);
  double q[3] = {1, 2, 3};
  ck_assert_int_eq(nf_adam_step(clean, q, g), NF_OK);
  ck_assert(memcmp(p, q, sizeof p) == 0);
  expect_same_steps(adam, clean, 3, p, g, 1);
  nf_adam_free(adam);
  nf_adam_free(clean);
}
END_TEST

/* Each option out of range gives NULL and a message naming it. */
START_TEST(test_bad_options)
{
  ck_assert_ptr_null(nf_adam_new(0, NULL));
  ck_assert(strstr(nf_errmsg(), "n must be") != NULL);
  struct bad_case { const char *name; nf_adam_opts o; } cases[12];
  int nc = 0;
  nf_adam_opts d = nf_adam_defaults(), o;
  o = d; o.lr = 0;             cases[nc++] = (struct bad_case){"lr", o};
  o = d; o.lr = -1;            cases[nc++] = (struct bad_case){"lr", o};
  o = d; o.lr = NAN;           cases[nc++] = (struct bad_case){"lr", o};
  o = d; o.beta1 = 1;          cases[nc++] = (struct bad_case){"beta1", o};
  o = d; o.beta1 = -0.1;       cases[nc++] = (struct bad_case){"beta1", o};
  o = d; o.beta2 = 1;          cases[nc++] = (struct bad_case){"beta2", o};
  o = d; o.beta2 = NAN;        cases[nc++] = (struct bad_case){"beta2", o};
  o = d; o.eps = 0;            cases[nc++] = (struct bad_case){"eps", o};
  o = d; o.weight_decay = -1;  cases[nc++] = (struct bad_case){"weight_decay", o};
  o = d; o.weight_decay = INFINITY; cases[nc++] = (struct bad_case){"weight_decay", o};
  o = d; o.clip_norm = -1;     cases[nc++] = (struct bad_case){"clip_norm", o};
  o = d; o.clip_norm = NAN;    cases[nc++] = (struct bad_case){"clip_norm", o};
  for (int k = 0; k < nc; k++) {
    ck_assert_ptr_null(nf_adam_new(4, &cases[k].o));
    ck_assert_msg(strstr(nf_errmsg(), cases[k].name) != NULL, "case %d: message '%s'",
                  k, nf_errmsg());
  }
  nf_adam *adam = nf_adam_new(2, NULL);
  double p[2] = {0, 0}, g[2] = {1, 1};
  ck_assert_int_eq(nf_adam_step(NULL, p, g), NF_EINVAL);
  ck_assert_int_eq(nf_adam_step(adam, NULL, g), NF_EINVAL);
  ck_assert_int_eq(nf_adam_step(adam, p, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_adam_set_lr(adam, 0), NF_EINVAL);
  ck_assert_int_eq(nf_adam_set_lr(adam, INFINITY), NF_EINVAL);
  ck_assert_int_eq(nf_adam_set_lr(NULL, 0.1), NF_EINVAL);
  ck_assert_double_eq(nf_adam_options(adam).lr, 1e-3);
  ck_assert_int_eq(nf_adam_set_lr(adam, 0.1), NF_OK);
  ck_assert_double_eq(nf_adam_options(adam).lr, 0.1);
  nf_adam_reset(NULL);
  nf_adam_free(adam);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {test_defaults, test_quadratic_minimum, test_update_formula,
                          test_first_step_by_hand, test_weight_decay_variants, test_clipping,
                          test_reset, test_nonfinite_gradient, test_bad_options, NULL};
  return th_run_tests("adam", 0, tests);
}
