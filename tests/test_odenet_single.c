/* Tests of the single-precision CNF dynamics network (nf_odenet_set_precision)
   and of a single-precision CNF layer: agreement with double, derivatives
   against finite differences with h = 1e-3 (float arithmetic: errors near
   1e-7 / h), the CNF layer's round trip, log-det, vjp, save -> load, the ODE
   tolerance floor, and a short training that reaches the double run's NLL. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "nflow.h"

#define N 6
static const double T0 = 0.37;
static const size_t hidden[] = {16, 12};

/* A net of config i (0: concatsquash tanh, 1: concat softplus with a context
   of width 2, 2: sinusoidal swish) on R^3 in the given precision. */
static nf_odenet *make_net(int i, nf_precision prec)
{
  static const nf_odenet_kind kinds[] = {NF_ODENET_CONCATSQUASH, NF_ODENET_CONCAT, NF_ODENET_SINUSOIDAL};
  static const nf_odenet_act acts[] = {NF_ODENET_TANH, NF_ODENET_SOFTPLUS, NF_ODENET_SWISH};
  nf_odenet *net = nf_odenet_new(3, i == 1 ? 2 : 0, 2, hidden, kinds[i], acts[i]);
  ck_assert_ptr_nonnull(net);
  ck_assert_int_eq(nf_odenet_set_precision(net, prec), NF_OK);
  ck_assert_int_eq(nf_odenet_precision(net), prec);
  return net;
}

/* Everything one adjoint call of a net gives. */
typedef struct outs {
  double f[N * 3], tr[N], jac[N], g_z[N * 3], g_t, g_ctx[N * 2], *g_p;
} outs;

/* nf_odenet_adjoint with S = a.f + w tr + wj jac (exact trace, no probe). */
static void adjoint(const nf_odenet *net, const double *theta, const double *z, const double *ctx,
                    const double *a, const double *w, outs *o)
{
  size_t np = nf_odenet_n_params(net);
  double *work = malloc(nf_odenet_work_size(net, N, 1) * sizeof *work);
  o->g_p = calloc(np, sizeof *o->g_p);
  memset(o->g_ctx, 0, sizeof o->g_ctx);
  ck_assert_int_eq(nf_odenet_adjoint(net, theta, N, T0, z, ctx, NULL, a, w, NULL, w, o->f, o->tr,
                                     NULL, o->jac, o->g_z, o->g_p, &o->g_t, o->g_ctx, work),
                   NF_OK);
  free(work);
}

/* Seeds 11 + i: single and double agree to 1e-5 norm-wise relative (floor 1e-3)
   in f, tr, jac and every gradient of the adjoint. */
START_TEST(single_matches_double)
{
  for (int i = 0; i < 3; i++) {
    nf_odenet *nd = make_net(i, NF_PRECISION_DOUBLE), *ns = make_net(i, NF_PRECISION_SINGLE);
    nf_rng rng;
    nf_rng_seed(&rng, 11 + (uint64_t)i);
    size_t np = nf_odenet_n_params(nd);
    double *theta = malloc(np * sizeof *theta), z[N * 3], ctx[N * 2], a[N * 3], w[N];
    nf_odenet_init(nd, &rng, theta);
    nf_rng_normal_fill(&rng, N * 3, z);
    nf_rng_normal_fill(&rng, N * 2, ctx);
    nf_rng_normal_fill(&rng, N * 3, a);
    nf_rng_normal_fill(&rng, N, w);
    outs od, os;
    adjoint(nd, theta, z, ctx, a, w, &od);
    adjoint(ns, theta, z, ctx, a, w, &os);
    double e[7] = {th_rel_err(N * 3, os.f, od.f, 1e-3), th_rel_err(N, os.tr, od.tr, 1e-3),
                   th_rel_err(N, os.jac, od.jac, 1e-3), th_rel_err(N * 3, os.g_z, od.g_z, 1e-3),
                   th_rel_err(np, os.g_p, od.g_p, 1e-3), th_rel_err(1, &os.g_t, &od.g_t, 1e-3),
                   th_rel_err(N * 2, os.g_ctx, od.g_ctx, 1e-3)};
    for (int k = 0; k < 7; k++) {
      fprintf(stderr, "config %d output %d: single vs double rel err %.3g (tol 1e-5)\n", i, k, e[k]);
      ck_assert_msg(e[k] <= 1e-5, "config %d output %d: %g", i, k, e[k]);
    }
    free(od.g_p);
    free(os.g_p);
    free(theta);
    nf_odenet_free(nd);
    nf_odenet_free(ns);
  }
}
END_TEST

/* S(z) = a.f + w tr + w jac of the single net (for differences). */
static double s_of(const nf_odenet *net, const double *theta, const double *z, const double *ctx,
                   const double *a, const double *w)
{
  outs o;
  adjoint(net, theta, z, ctx, a, w, &o);
  free(o.g_p);
  double s = 0;
  for (size_t k = 0; k < N * 3; k++) s += a[k] * o.f[k];
  for (size_t k = 0; k < N; k++) s += w[k] * (o.tr[k] + o.jac[k]);
  return s;
}

/* Central difference of S in the entry *x (one of z, theta, ctx), step h. */
static double fd_entry(const nf_odenet *net, const double *theta, const double *z,
                       const double *ctx, const double *a, const double *w, double *x, double h)
{
  double s = *x, sp, sm;
  *x = s + h;
  sp = s_of(net, theta, z, ctx, a, w);
  *x = s - h;
  sm = s_of(net, theta, z, ctx, a, w);
  *x = s;
  return (sp - sm) / (2 * h);
}

/* Seeds 21 + i, h = 1e-3: the single net's jvp against central differences of
   eval, and its adjoint's g_z, g_params (every 7th), g_t and g_ctx against
   central differences of S, to 1e-3 norm-wise relative (floor 1e-2; g_z, g_ctx 5e-3). */
START_TEST(single_derivatives_match_finite_differences)
{
  /* g_z and g_ctx carry the second-order trace terms, whose differences of the
     float S have noise near FLT_EPSILON |S| / h: 5e-3 for them */
  const double h = 1e-3, tol = 1e-3, tol_in = 5e-3;
  for (int i = 0; i < 3; i++) {
    nf_odenet *net = make_net(i, NF_PRECISION_SINGLE);
    size_t np = nf_odenet_n_params(net), c = nf_odenet_ctx_dim(net);
    nf_rng rng;
    nf_rng_seed(&rng, 21 + (uint64_t)i);
    double *theta = malloc(np * sizeof *theta), z[N * 3], ctx[N * 2], a[N * 3], w[N], v[N * 3];
    double *work = malloc(nf_odenet_work_size(net, N, 1) * sizeof *work);
    double jv[N * 3], fd[N * 3], fp[N * 3], fm[N * 3], zp[N * 3], zm[N * 3];
    nf_odenet_init(net, &rng, theta);
    nf_rng_normal_fill(&rng, N * 3, z);
    nf_rng_normal_fill(&rng, N * 2, ctx);
    nf_rng_normal_fill(&rng, N * 3, a);
    nf_rng_normal_fill(&rng, N, w);
    nf_rng_normal_fill(&rng, N * 3, v);
    ck_assert_int_eq(nf_odenet_jvp(net, theta, N, T0, z, ctx, v, NULL, jv, work), NF_OK);
    for (size_t k = 0; k < N * 3; k++) {
      zp[k] = z[k] + h * v[k];
      zm[k] = z[k] - h * v[k];
    }
    nf_odenet_eval(net, theta, N, T0, zp, ctx, fp, work);
    nf_odenet_eval(net, theta, N, T0, zm, ctx, fm, work);
    for (size_t k = 0; k < N * 3; k++) fd[k] = (fp[k] - fm[k]) / (2 * h);
    double e_jvp = th_rel_err(N * 3, jv, fd, 1e-2);
    outs o;
    adjoint(net, theta, z, ctx, a, w, &o);
    double ez = 0, ep = 0, ec = 0, gmax = 1e-2, pmax = 1e-2, cmax = 1e-2;
    for (size_t k = 0; k < N * 3; k++) gmax = fmax(gmax, fabs(o.g_z[k]));
    for (size_t k = 0; k < N * c; k++) cmax = fmax(cmax, fabs(o.g_ctx[k]));
    for (size_t k = 0; k < np; k++) pmax = fmax(pmax, fabs(o.g_p[k]));
    for (size_t k = 0; k < N * 3; k++)
      ez = fmax(ez, fabs(fd_entry(net, theta, z, ctx, a, w, z + k, h) - o.g_z[k]) / gmax);
    for (size_t k = 0; k < np; k += 7)
      ep = fmax(ep, fabs(fd_entry(net, theta, z, ctx, a, w, theta + k, h) - o.g_p[k]) / pmax);
    for (size_t k = 0; k < N * c; k++)
      ec = fmax(ec, fabs(fd_entry(net, theta, z, ctx, a, w, ctx + k, h) - o.g_ctx[k]) / cmax);
    /* g_t: S at t +- h through the same call with shifted times */
    double *wk2 = malloc(nf_odenet_work_size(net, N, 1) * sizeof *wk2), st[2];
    for (int sgn = 0; sgn < 2; sgn++) {
      double f2[N * 3], tr2[N], jac2[N], tt = T0 + (sgn ? -h : h);
      nf_odenet_trace(net, theta, N, tt, z, ctx, NULL, f2, tr2, NULL, jac2, wk2);
      st[sgn] = 0;
      for (size_t k = 0; k < N * 3; k++) st[sgn] += a[k] * f2[k];
      for (size_t k = 0; k < N; k++) st[sgn] += w[k] * (tr2[k] + jac2[k]);
    }
    double et = fabs((st[0] - st[1]) / (2 * h) - o.g_t) / fmax(1e-2, fabs(o.g_t));
    fprintf(stderr, "single config %d vs FD (h %g): jvp %.3g g_z %.3g g_params %.3g g_ctx %.3g "
            "g_t %.3g (tol %g; g_z, g_ctx %g)\n", i, h, e_jvp, ez, ep, ec, et, tol, tol_in);
    ck_assert(e_jvp <= tol && ez <= tol_in && ep <= tol && ec <= tol_in && et <= tol);
    free(o.g_p);
    free(wk2);
    free(work);
    free(theta);
    nf_odenet_free(net);
  }
}
END_TEST

/* Options of the CNF layers below: hidden 16-16, tanh, T = 0.5 fixed, exact
   trace, RK4 with 8 steps and the discrete adjoint (the gradient of the map
   computed), in the given precision. */
static nf_cnf_opts cnf_opts(nf_precision prec)
{
  static const size_t h2[] = {16, 16};
  nf_cnf_opts o = nf_cnf_defaults();
  o.n_hidden = 2;
  o.hidden = h2;
  o.train_end_time = 0;
  o.ode = nf_ode_defaults(NF_ODE_RK4);
  o.ode.fixed_steps = 8;
  o.ode.grad = NF_GRAD_DISCRETE;
  o.ode.rtol = o.ode.atol = 2e-5;
  o.precision = prec;
  return o;
}

/* Seed 31: a single-precision CNF layer on R^2 (RK4, and DOPRI5 at rtol = atol
   = 2e-5 for the round trip) inverts itself to 1e-4, its log-det matches the
   brute-force Jacobian (h 1e-3) to 1e-3, its vjp matches differences (h 1e-3)
   to 1e-3, and a flow of it saves and loads bit for bit. */
START_TEST(single_cnf_layer)
{
  nf_rng rng;
  nf_rng_seed(&rng, 31);
  for (int adaptive = 0; adaptive < 2; adaptive++) {
    nf_cnf_opts o = cnf_opts(NF_PRECISION_SINGLE);
    if (adaptive) {
      o.ode = nf_ode_defaults(NF_ODE_DOPRI5);
      o.ode.rtol = o.ode.atol = 2e-5;
    }
    nf_layer *layer = nf_cnf_new(2, 0, &o, &rng);
    ck_assert_msg(layer != NULL, "%s", nf_errmsg());
    const double *theta = nf_layer_init_params(layer);
    double *z = th_random_points(8, 2, 32, 1.0);
    double rt = th_roundtrip_error(layer, theta, 8, z, NULL, NULL);
    double ld = th_logdet_error(layer, theta, NF_FORWARD, 8, z, NULL, 1e-3);
    fprintf(stderr, "single CNF (%s): round trip %.3g (tol 1e-4), log-det vs Jacobian %.3g "
            "(tol 1e-3)\n", adaptive ? "dopri5" : "rk4", rt, ld);
    ck_assert(rt <= 1e-4 && ld <= 1e-3);
    if (!adaptive) {
      th_vjp_errors ve = th_vjp_check(layer, theta, NF_INVERSE, 8, z, NULL, 33, 1e-3);
      fprintf(stderr, "single CNF vjp vs FD (h 1e-3): in %.3g params %.3g (tol 1e-3)\n", ve.in,
              ve.params);
      ck_assert(ve.in <= 1e-3 && ve.params <= 1e-3);
      nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
      nf_flow_push(flow, layer);
      nf_flow *copy = th_save_load(flow, 8, z);
      nf_flow_free(copy);
      nf_flow_free(flow);
    } else {
      nf_layer_free(layer);
    }
    free(z);
  }
}
END_TEST

/* A single-precision CNF refuses tolerances below 100 FLT_EPSILON, naming the
   precision; the same tolerance is fine in double; an unknown precision is refused. */
START_TEST(single_cnf_tolerance_floor)
{
  nf_rng rng;
  nf_rng_seed(&rng, 41);
  nf_cnf_opts o = cnf_opts(NF_PRECISION_SINGLE);
  o.ode.rtol = 1e-5;
  ck_assert_ptr_null(nf_cnf_new(2, 0, &o, &rng));
  ck_assert_int_eq(nf_last_status(), NF_EINVAL);
  ck_assert_msg(strstr(nf_errmsg(), "single") && strstr(nf_errmsg(), "rtol"), "%s", nf_errmsg());
  o.ode.rtol = 2e-5;
  o.ode.atol = 1e-6;
  ck_assert_ptr_null(nf_cnf_new(2, 0, &o, &rng));
  o.precision = NF_PRECISION_DOUBLE;
  nf_layer *ok = nf_cnf_new(2, 0, &o, &rng);
  ck_assert_ptr_nonnull(ok);
  nf_layer_free(ok);
  o.precision = (nf_precision)7;
  ck_assert_ptr_null(nf_cnf_new(2, 0, &o, &rng));
  ck_assert_int_eq(nf_odenet_set_precision(NULL, NF_PRECISION_SINGLE), NF_EINVAL);
}
END_TEST

/* Trains a CNF (seed 51, the same initial parameters and batches in both
   precisions) on 512 points of "8gaussians" for 60 Adam steps (lr 1e-2, batch
   128); returns the NLL of 512 held-out points (seed 52) in the layer's precision. */
static double train_nll(nf_precision prec, double *initial)
{
  nf_rng rng, drng;
  nf_rng_seed(&rng, 51);
  nf_rng_seed(&drng, 52);
  nf_dataset *train, *test;
  ck_assert_int_eq(nf_toy_sample("8gaussians", 512, &rng, &train), NF_OK);
  ck_assert_int_eq(nf_toy_sample("8gaussians", 512, &drng, &test), NF_OK);
  nf_cnf_opts o = cnf_opts(prec);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  nf_flow_push(flow, nf_cnf_new(2, 0, &o, &rng));
  size_t p = nf_flow_n_params(flow);
  nf_adam_opts ao = nf_adam_defaults();
  ao.lr = 1e-2;
  nf_adam *adam = nf_adam_new(p, &ao);
  double *theta = malloc(p * sizeof *theta), nll;
  memcpy(theta, nf_flow_params(flow), p * sizeof *theta);
  ck_assert_int_eq(nf_flow_nll(flow, 512, test->x, NULL, initial), NF_OK);
  for (size_t it = 0; it < 60; it++) {
    ck_assert_int_eq(nf_flow_nll_grad(flow, 128, train->x + (it % 4) * 128 * 2, NULL, &nll), NF_OK);
    ck_assert_int_eq(nf_adam_step(adam, theta, nf_flow_grad(flow)), NF_OK);
    ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  }
  ck_assert_int_eq(nf_flow_nll(flow, 512, test->x, NULL, &nll), NF_OK);
  free(theta);
  nf_adam_free(adam);
  nf_flow_free(flow);
  nf_dataset_free(train);
  nf_dataset_free(test);
  return nll;
}

/* Both precisions fall by more than 0.5 nats from the initial held-out NLL and
   end within 0.02 nats of each other. */
START_TEST(single_cnf_trains_like_double)
{
  double init_d, init_s;
  double nd = train_nll(NF_PRECISION_DOUBLE, &init_d), ns = train_nll(NF_PRECISION_SINGLE, &init_s);
  fprintf(stderr, "CNF training, held-out NLL: double %.4f -> %.4f, single %.4f -> %.4f\n",
          init_d, nd, init_s, ns);
  ck_assert(init_d - nd > 0.5 && init_s - ns > 0.5);
  ck_assert(fabs(nd - ns) < 0.02);
}
END_TEST

static Suite *suite(void)
{
  Suite *s = suite_create("odenet_single");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, single_matches_double);
  tcase_add_test(tc, single_derivatives_match_finite_differences);
  tcase_add_test(tc, single_cnf_layer);
  tcase_add_test(tc, single_cnf_tolerance_floor);
  tcase_add_test(tc, single_cnf_trains_like_double);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
