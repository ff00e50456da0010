/* tests/test_spline.c — the rational-quadratic spline transformers (interval,
   Durkan et al. 2019; circular, Rezende et al. 2020) on their own and inside
   coupling layers (NSF-coupling).

   Transformers, at seeded raw values ~ N(0, 1.5^2) and at raw values of +-30
   (where the minimum widths, heights and derivatives bind), K = 1 and 5:
   round trip (forward then inverse and inverse then forward) at random points,
   in the tails, at the knots and within 1e-10 of them and of +-B; log-det
   against central differences; continuity of value and log-derivative across
   every knot; the map's knots, heights and knot derivatives against the
   formulas (and so the minima); identity tails; identity_init; backward
   against central differences for the input and all raw values in both
   directions; circular: -pi -> -pi, pi -> pi, equal end derivatives,
   NF_EDOMAIN outside [-pi, pi]. At +-30 the checks limited by the map's own
   conditioning use EXTREME_TOL (see there).
   Couplings: th_check_bijector (both directions, with and without context),
   grid mass of a 2-D flow, save -> load bit for bit, threads, bad options
   and a bad saved option refused.
   Linked -static: the transformers and nf_config_new are internal. */
#define _GNU_SOURCE /* mkdtemp */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "io/io_internal.h"
#include "nflow/config.h"
#include "nflow/layer_impl.h"
#include "nflow/model.h"
#include "transformer.h"

#define PI 3.14159265358979323846
#define MAXK 8
#define MAX_RAW (3 * MAXK)
#define MAX_REC (2 * MAXK + 6)
#define RT_TOL 1e-10
#define CANCEL_TOL 1e-10
#define LD_FD_TOL 1e-6
#define KNOT_TOL 1e-9
#define BACKWARD_TOL 1e-6
/* Raw values of +-30 make bins of slope ~6e-8 next to bins of slope ~1e3 and
   knots where the log-derivative changes by 3e8 per unit x (3e11 per unit y
   for the inverse): the map itself resolves x only to ~1e-9 there, which
   bounds what finite differences, log-det cancellation and the inverse's
   one-sided limits can show. Those checks use this bound at +-30; the
   well-conditioned ones (slope-scaled round trip, forward knot limits) keep
   the bounds above. */
#define EXTREME_TOL 1e-3
#define FD_REL_STEP 1e-4 /* of the bin width: inputs */
#define FD_RAW_STEP 1e-5 /* raw values */

/* Fourth-order central difference from f at offsets -2s, -s, s, 2s. */
static double fd4(const double f[4], double step)
{
  return (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * step);
}

/* One spline under test: its ops, options and interval. */
typedef struct spline_case {
  const char *label;
  const nf_transformer *tf;
  nf_transformer_opts o;
  double lo, hi;
  int circular;
} spline_case;

/* The interval spline (B = 3) or the circular one, K bins, default minima. */
static spline_case make_case(int circular, size_t K)
{
  spline_case c;
  c.circular = circular;
  c.tf = circular ? &nf_transformer_circular_spline : &nf_transformer_spline;
  c.o = nf_transformer_spec_default(circular ? NF_TRANSFORMER_CIRCULAR_SPLINE
                                             : NF_TRANSFORMER_SPLINE);
  c.o.bins = K;
  c.o.tail_bound = 3.0;
  c.lo = circular ? -PI : -3.0;
  c.hi = -c.lo;
  c.label = circular ? "circular spline" : "spline";
  ck_assert_int_eq(c.tf->check_opts(&c.o, "test"), NF_OK);
  ck_assert_uint_eq(c.tf->n_raw(&c.o), 3 * K - (circular ? 0 : 1));
  ck_assert_uint_le(c.tf->n_record(&c.o), MAX_REC);
  return c;
}

/* Raw values of one coordinate: regime 0 ~ N(0, 1.5^2), regime 1 +-30. */
static void draw_raw(const spline_case *c, nf_rng *rng, int regime, double *h)
{
  size_t nr = c->tf->n_raw(&c->o);
  th_randn(rng, nr, 1.5, h);
  if (regime)
    for (size_t k = 0; k < nr; k++) h[k] = h[k] < 0 ? -30.0 : 30.0;
}

/* The knots the formulas give: widths (heights: logits u = the height
   logits) m + (1 - K m) softmax(u) of hi - lo, cumulated; c[K] = hi. */
static void ref_knots(const spline_case *c, const double *u, double m, double *knot)
{
  size_t K = c->o.bins;
  double mx = u[0], sum = 0, p[MAXK];
  for (size_t i = 1; i < K; i++) mx = fmax(mx, u[i]);
  for (size_t i = 0; i < K; i++) sum += p[i] = exp(u[i] - mx);
  knot[0] = c->lo;
  for (size_t i = 0; i + 1 < K; i++)
    knot[i + 1] = knot[i] + (c->hi - c->lo) * (m + (1.0 - K * m) * p[i] / sum);
  knot[K] = c->hi;
}

/* Knot j's derivative by the formulas: min_d + softplus(raw), or 1 at the
   interval spline's ends; circular knot K shares knot 0's raw. */
static double ref_derivative(const spline_case *c, const double *h, size_t j)
{
  size_t K = c->o.bins;
  if (!c->circular && (j == 0 || j == K)) return 1.0;
  double r = h[2 * K + (c->circular ? j % K : j - 1)];
  return c->o.min_derivative + (r > 0 ? r + log1p(exp(-r)) : log1p(exp(r)));
}

/* out = τ^{+-1}(v) for one coordinate with raw values h; *logd its log-det. */
static nf_status eval1(const spline_case *c, nf_dir dir, const double *h, double v, double *out,
                       double *logd)
{
  double rec[MAX_REC], ld = 0;
  nf_status st = dir == NF_FORWARD ? c->tf->forward(&c->o, 1, 1, h, &v, out, &ld, rec)
                                   : c->tf->inverse(&c->o, 1, 1, h, &v, out, &ld, rec);
  *logd = ld;
  return st;
}

/* eval1 asserting success. */
static double map1(const spline_case *c, nf_dir dir, const double *h, double v, double *logd)
{
  double out;
  ck_assert_msg(eval1(c, dir, h, v, &out, logd) == NF_OK, "%s: %s", c->label, nf_errmsg());
  return out;
}

/* Clamps v into the circular spline's domain (the interval one takes any v). */
static double in_domain(const spline_case *c, double v)
{
  return c->circular ? fmin(fmax(v, c->lo), c->hi) : v;
}

/* Round trip starting in direction dir at v: rt = max |v2 - v| min(1, |dw/dv|),
   the error in the units of the first map's output w (a map of slope 1e-8,
   which +-30 raw values can make, leaves w's rounding 1e8 times larger in v2;
   rt_raw without that scaling), and the log-det cancellation |l1 + l2|. */
typedef struct rt_errors {
  double rt, rt_raw, cancel;
} rt_errors;

static void round_trip_at(const spline_case *c, nf_dir dir, const double *h, double v,
                          rt_errors *e)
{
  double l1, l2, w = map1(c, dir, h, v, &l1);
  double v2 = map1(c, dir == NF_FORWARD ? NF_INVERSE : NF_FORWARD, h, w, &l2);
  e->rt = fmax(e->rt, fabs(v2 - v) * fmin(1.0, exp(l1)));
  e->rt_raw = fmax(e->rt_raw, fabs(v2 - v));
  e->cancel = fmax(e->cancel, fabs(l1 + l2));
}

/* Round trips from both sides at random points and at the knots (+-0,
   +-1e-10; the y-knots for the inverse), +-B +- 1e-10 and 5e-10 (interval).
   Raw values ~ N(0, 1.5^2): |v2 - v| and |l1 + l2| <= 1e-10. Raw values
   +-30: the slope-scaled error <= 1e-10, |l1 + l2| <= EXTREME_TOL. */
START_TEST(test_round_trip)
{
  nf_rng rng;
  nf_rng_seed(&rng, 101);
  for (int circ = 0; circ < 2; circ++)
    for (size_t K = 1; K <= 5; K += 4)
      for (int regime = 0; regime < 2; regime++) {
        spline_case c = make_case(circ, K);
        double h[MAX_RAW], knot[MAXK + 1];
        rt_errors e = {0, 0, 0};
        for (int rep = 0; rep < 5; rep++) {
          draw_raw(&c, &rng, regime, h);
          for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
            ref_knots(&c, h + (dir == NF_FORWARD ? 0 : K),
                      dir == NF_FORWARD ? c.o.min_bin_width : c.o.min_bin_height, knot);
            for (int k = 0; k < 20; k++) {
              double v = c.lo - 1 + (c.hi - c.lo + 2) * nf_rng_uniform(&rng);
              round_trip_at(&c, (nf_dir)dir, h, in_domain(&c, v), &e);
            }
            for (size_t j = 0; j <= K; j++)
              for (int s = -1; s <= 1; s++)
                round_trip_at(&c, (nf_dir)dir, h, in_domain(&c, knot[j] + s * 1e-10), &e);
            const double near[5] = {-5e-10, -1e-10, 0.0, 1e-10, 5e-10};
            for (int s = 0; s < 5; s++)
              for (int side = -1; side <= 1; side += 2)
                round_trip_at(&c, (nf_dir)dir, h, in_domain(&c, side * c.hi + near[s]), &e);
          }
        }
        const double cancel_tol = regime ? EXTREME_TOL : CANCEL_TOL;
        printf("%s K=%zu raw %s: round trip %.2e (slope-scaled %.2e; <= %g), log-det "
               "cancellation %.2e (<= %g)\n", c.label, K, regime ? "+-30" : "N(0,1.5^2)",
               e.rt_raw, e.rt, RT_TOL, e.cancel, cancel_tol);
        ck_assert_double_le(regime ? e.rt : e.rt_raw, RT_TOL);
        ck_assert_double_le(e.cancel, cancel_tol);
      }
}
END_TEST

/* The log-derivative of both directions against a fourth-order central
   difference (step 1e-4 of the bin width) at points inside the bins (xi in
   [0.05, 0.95]) and in the tails (step 1e-4). */
START_TEST(test_logdet_fd)
{
  nf_rng rng;
  nf_rng_seed(&rng, 202);
  for (int circ = 0; circ < 2; circ++)
    for (int regime = 0; regime < 2; regime++) {
      spline_case c = make_case(circ, 5);
      double err = 0, h[MAX_RAW], knot[MAXK + 1];
      for (int rep = 0; rep < 5; rep++) {
        draw_raw(&c, &rng, regime, h);
        for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
          ref_knots(&c, h + (dir == NF_FORWARD ? 0 : 5),
                    dir == NF_FORWARD ? c.o.min_bin_width : c.o.min_bin_height, knot);
          for (int k = 0; k < 12; k++) {
            size_t b = nf_rng_below(&rng, 5);
            double xi = 0.05 + 0.9 * nf_rng_uniform(&rng);
            const int tail = k < 2 && !circ;
            double v = tail ? (k ? -1 : 1) * (c.hi + 0.5) : knot[b] + xi * (knot[b + 1] - knot[b]);
            double step = FD_REL_STEP * (tail ? 1.0 : knot[b + 1] - knot[b]), f[4], ld, unused;
            for (int m = 0; m < 4; m++)
              f[m] = map1(&c, (nf_dir)dir, h, v + (m < 2 ? m - 2 : m - 1) * step, &unused);
            map1(&c, (nf_dir)dir, h, v, &ld);
            err = fmax(err, fabs(ld - log(fd4(f, step))));
          }
        }
      }
      const double tol = regime ? EXTREME_TOL : LD_FD_TOL;
      printf("%s raw %s: log-det vs central differences %.2e (<= %g)\n", c.label,
             regime ? "+-30" : "N(0,1.5^2)", err, tol);
      ck_assert_double_le(err, tol);
    }
}
END_TEST

/* The bin the library puts v in (direction dir): rec[2K], rq_bins.h's record layout. */
static long lib_bin(const spline_case *c, nf_dir dir, const double *h, double v)
{
  double rec[MAX_REC], out, ld = 0;
  ck_assert_int_eq(dir == NF_FORWARD ? c->tf->forward(&c->o, 1, 1, h, &v, &out, &ld, rec)
                                     : c->tf->inverse(&c->o, 1, 1, h, &v, &out, &ld, rec), NF_OK);
  return (long)rec[2 * c->o.bins];
}

/* The library's own knot j near the formulas' v (they differ by rounding):
   the least double that it puts in bin j, by bisection over 64 ulp either side. */
static double lib_knot(const spline_case *c, nf_dir dir, const double *h, double v, size_t j)
{
  if (j == 0 || j == c->o.bins) return v; /* +-B, +-pi exactly */
  double lo = v - 64 * (nextafter(v, INFINITY) - v), hi = v + 64 * (nextafter(v, INFINITY) - v);
  ck_assert(lib_bin(c, dir, h, lo) == (long)j - 1 && lib_bin(c, dir, h, hi) == (long)j);
  while (nextafter(lo, hi) < hi) {
    double mid = lo + 0.5 * (hi - lo);
    if (mid <= lo || mid >= hi) mid = nextafter(lo, hi);
    if (lib_bin(c, dir, h, mid) >= (long)j) hi = mid;
    else lo = mid;
  }
  return hi;
}

/* The limits at v of the map (direction dir) and of its log-derivative from
   the side sgn (-1 left, +1 right): linear extrapolation from v + sgn eps and
   v + 3 sgn eps, eps = 8 ulp of the binade of max(|v|, 1) (exact offsets), so
   that a log-derivative changing by 3e8 per unit near a knot (+-30 raw
   values) still gives its limit to ~1e-12. */
static void side_limit(const spline_case *c, nf_dir dir, const double *h, double v, int sgn,
                       double *val, double *logd)
{
  const double eps = 8 * ldexp(1.0, ilogb(fmax(fabs(v), 1.0)) - 52);
  double l1, l3, a = map1(c, dir, h, v + sgn * eps, &l1);
  double b = map1(c, dir, h, v + 3 * sgn * eps, &l3);
  *val = a + 0.5 * (a - b);
  *logd = l1 + 0.5 * (l1 - l3);
}

/* Every knot j, both directions (x-knots forward, y-knots inverse; the
   library's own knot, found by bisection within 64 ulp of the formulas'): the
   one-sided limits of value and log-derivative agree to 1e-9 (continuity
   across the knot, and into the interval spline's tails at +-B) and equal
   the formulas' other knot and +-log d_j (so each width, height and knot
   derivative the map realises is the formula's, >= its minimum); circular
   (one side at +-pi): -pi -> -pi, pi -> pi, equal log-derivatives at both ends. */
START_TEST(test_knots)
{
  nf_rng rng;
  nf_rng_seed(&rng, 303);
  for (int circ = 0; circ < 2; circ++)
    for (int regime = 0; regime < 2; regime++) {
      spline_case c = make_case(circ, 5);
      const size_t K = 5;
      double jump_v = 0, jump_d = 0, jump_inv = 0, knot_err = 0, min_w = INFINITY,
             min_h = INFINITY, min_d = INFINITY, ends = 0;
      double h[MAX_RAW], xk[MAXK + 1], yk[MAXK + 1];
      for (int rep = 0; rep < 8; rep++) {
        draw_raw(&c, &rng, regime, h);
        ref_knots(&c, h, c.o.min_bin_width, xk);
        ref_knots(&c, h + K, c.o.min_bin_height, yk);
        for (size_t j = 0; j <= K; j++) {
          double d = ref_derivative(&c, h, j);
          min_d = fmin(min_d, d);
          if (j < K) {
            min_w = fmin(min_w, (xk[j + 1] - xk[j]) / (c.hi - c.lo));
            min_h = fmin(min_h, (yk[j + 1] - yk[j]) / (c.hi - c.lo));
          }
          for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
            const int fwd = dir == NF_FORWARD;
            double v = lib_knot(&c, (nf_dir)dir, h, fwd ? xk[j] : yk[j], j);
            double w = fwd ? yk[j] : xk[j], ld = fwd ? log(d) : -log(d);
            double val[2], lim[2];
            for (int side = 0; side < 2; side++) {
              if (circ && j == (side ? K : 0)) { /* outside the circle: the inside limit */
                side_limit(&c, (nf_dir)dir, h, v, side ? -1 : 1, &val[side], &lim[side]);
                continue;
              }
              side_limit(&c, (nf_dir)dir, h, v, side ? 1 : -1, &val[side], &lim[side]);
            }
            double *jd = fwd ? &jump_d : &jump_inv;
            jump_v = fmax(jump_v, fabs(val[0] - val[1]));
            *jd = fmax(*jd, fabs(lim[0] - lim[1]));
            knot_err = fmax(knot_err, fmax(fabs(val[0] - w), fabs(val[1] - w)));
            *jd = fmax(*jd, fmax(fabs(lim[0] - ld), fabs(lim[1] - ld)));
          }
        }
        double l0, l1, y0 = map1(&c, NF_FORWARD, h, c.lo, &l0);
        double y1 = map1(&c, NF_FORWARD, h, c.hi, &l1);
        ends = fmax(ends, fmax(fabs(y0 - c.lo), fabs(y1 - c.hi)));
        if (circ) ends = fmax(ends, fabs(l0 - l1));
        else ends = fmax(ends, fmax(fabs(l0), fabs(l1)));
      }
      const double inv_tol = regime ? EXTREME_TOL : KNOT_TOL;
      printf("%s raw %s: one-sided limits at the knots: values |jump| and vs the formulas' "
             "knots %.2e (<= %g); log-derivative |jump| and vs log d_j: forward %.2e (<= %g), "
             "inverse %.2e (<= %g); min width %.3e, height %.3e, derivative %.3e; ends %.2e\n",
             c.label, regime ? "+-30" : "N(0,1.5^2)", fmax(jump_v, knot_err), KNOT_TOL, jump_d,
             KNOT_TOL, jump_inv, inv_tol, min_w, min_h, min_d, ends);
      ck_assert_double_le(jump_v, KNOT_TOL);
      ck_assert_double_le(knot_err, KNOT_TOL);
      ck_assert_double_le(jump_d, KNOT_TOL);
      ck_assert_double_le(jump_inv, inv_tol);
      ck_assert_double_ge(min_w, c.o.min_bin_width * (1 - 1e-12));
      ck_assert_double_ge(min_h, c.o.min_bin_height * (1 - 1e-12));
      ck_assert_double_ge(min_d, c.o.min_derivative);
      ck_assert_double_le(ends, 1e-14);
      if (regime) { /* +-30: some bin and some derivative at their minimum */
        ck_assert_double_le(min_w, c.o.min_bin_width * (1 + 1e-9));
        ck_assert_double_le(min_h, c.o.min_bin_height * (1 + 1e-9));
        ck_assert_double_le(min_d, c.o.min_derivative * (1 + 1e-9));
      }
    }
}
END_TEST

/* The interval spline is exactly the identity outside [-B, B] (log-det 0,
   input cotangent = output cotangent, raw cotangents 0); the circular one
   refuses inputs outside [-pi, pi] (and NaN) with NF_EDOMAIN, writing nothing. */
START_TEST(test_tails_and_domain)
{
  nf_rng rng;
  nf_rng_seed(&rng, 404);
  spline_case c = make_case(0, 5);
  double h[2 * MAX_RAW] = {0}, x[2] = {-3.0000001, 1e6}, y[2], ld = 0.5, rec[2 * MAX_REC];
  draw_raw(&c, &rng, 0, h);
  draw_raw(&c, &rng, 0, h + 14);
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ld = 0.5;
    nf_status st = dir == NF_FORWARD ? c.tf->forward(&c.o, 1, 2, h, x, y, &ld, rec)
                                     : c.tf->inverse(&c.o, 1, 2, h, x, y, &ld, rec);
    ck_assert_int_eq(st, NF_OK);
    ck_assert_mem_eq(y, x, sizeof x);
    ck_assert_double_eq(ld, 0.5);
    double g_out[2] = {0.3, -1.7}, g_l = 2.0, g_in[2], g_h[2 * 14];
    c.tf->backward(&c.o, (nf_dir)dir, 1, 2, h, x, y, rec, g_out, &g_l, g_in, g_h);
    ck_assert_mem_eq(g_in, g_out, sizeof g_out);
    for (size_t k = 0; k < 28; k++) ck_assert_double_eq(g_h[k], 0.0);
  }
  spline_case s = make_case(1, 5);
  const double bad[4] = {3.1416, -3.1416, 100.0, NAN};
  for (int k = 0; k < 4; k++)
    for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
      double in[2] = {0.5, bad[k]}, out[2] = {7, 7}, l = 0.25;
      nf_status st = dir == NF_FORWARD ? s.tf->forward(&s.o, 1, 2, h, in, out, &l, rec)
                                       : s.tf->inverse(&s.o, 1, 2, h, in, out, &l, rec);
      ck_assert_int_eq(st, NF_EDOMAIN);
      ck_assert_msg(strstr(nf_errmsg(), "outside [-pi, pi]") && strstr(nf_errmsg(), "coordinate 1"),
                    "message '%s'", nf_errmsg());
      ck_assert(out[0] == 7 && out[1] == 7 && l == 0.25);
    }
}
END_TEST

/* identity_init's raw values give the identity (|y - x| <= 1e-13 (1 + |x|),
   |log-det| <= 1e-13) in both directions, inside and outside the bins. */
START_TEST(test_identity_init)
{
  nf_rng rng;
  nf_rng_seed(&rng, 505);
  for (int circ = 0; circ < 2; circ++)
    for (size_t K = 1; K <= 8; K += 7) {
      spline_case c = make_case(circ, K);
      c.o.min_derivative = 0.25;
      c.o.min_bin_width = 0.01;
      double h[MAX_RAW], err = 0, lerr = 0;
      c.tf->identity_init(&c.o, h);
      for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++)
        for (int k = 0; k < 50; k++) {
          double v = in_domain(&c, 5.0 * (2 * nf_rng_uniform(&rng) - 1)), ld;
          double y = map1(&c, (nf_dir)dir, h, v, &ld);
          err = fmax(err, fabs(y - v) / (1 + fabs(v)));
          lerr = fmax(lerr, fabs(ld));
        }
      printf("%s K=%zu identity_init: |y - x| %.2e, |log-det| %.2e (<= 1e-13)\n", c.label, K,
             err, lerr);
      ck_assert_double_le(err, 1e-13);
      ck_assert_double_le(lerr, 1e-13);
    }
}
END_TEST

#define BN 3
#define BDB 2
#define BE (BN * BDB)

/* L = sum(g_out out) + sum(g_l logdet) of the block map in direction dir. */
static double block_loss(const spline_case *c, nf_dir dir, const double *h, const double *in,
                         const double *g_out, const double *g_l)
{
  double out[BE], ld[BN] = {0}, rec[BE * MAX_REC], L = 0;
  nf_status st = dir == NF_FORWARD ? c->tf->forward(&c->o, BN, BDB, h, in, out, ld, rec)
                                   : c->tf->inverse(&c->o, BN, BDB, h, in, out, ld, rec);
  ck_assert_int_eq(st, NF_OK);
  for (size_t k = 0; k < BE; k++) L += g_out[k] * out[k];
  for (size_t i = 0; i < BN; i++) L += g_l[i] * ld[i];
  return L;
}

/* Fourth-order central difference of block_loss along entry k of v (in or h). */
static double block_fd(const spline_case *c, nf_dir dir, double *h, double *in, double *v,
                       size_t k, double step, const double *g_out, const double *g_l)
{
  double keep = v[k], f[4];
  for (int m = 0; m < 4; m++) {
    v[k] = keep + (m < 2 ? m - 2 : m - 1) * step;
    f[m] = block_loss(c, dir, h, in, g_out, g_l);
  }
  v[k] = keep;
  return fd4(f, step);
}

/* backward against fourth-order central differences (input: step 1e-4 of
   the bin width; raw values: 1e-5) for the input and every raw value, both
   directions, on blocks of 3 rows x 2 coordinates with points inside bins
   (xi in [0.1, 0.9]) or (interval) in a tail; with g_in NULL the same raw
   cotangents exactly. */
START_TEST(test_backward_fd)
{
  nf_rng rng;
  nf_rng_seed(&rng, 606);
  for (int circ = 0; circ < 2; circ++)
    for (size_t K = 1; K <= 5; K += 4)
      for (int regime = 0; regime < 2; regime++) {
        spline_case c = make_case(circ, K);
        const size_t nr = c.tf->n_raw(&c.o), nh = BE * nr;
        double e_in = 0, e_h = 0;
        for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++)
          for (int rep = 0; rep < 3; rep++) {
            double h[BE * MAX_RAW], in[BE], step[BE], knot[MAXK + 1];
            for (size_t e = 0; e < BE; e++) {
              draw_raw(&c, &rng, regime, h + e * nr);
              ref_knots(&c, h + e * nr + (dir == NF_FORWARD ? 0 : K),
                        dir == NF_FORWARD ? c.o.min_bin_width : c.o.min_bin_height, knot);
              size_t b = nf_rng_below(&rng, K);
              in[e] = knot[b] + (0.1 + 0.8 * nf_rng_uniform(&rng)) * (knot[b + 1] - knot[b]);
              step[e] = FD_REL_STEP * (knot[b + 1] - knot[b]);
              if (!circ && e == 1) in[e] = 3.5 * (rep % 2 ? 1 : -1);
            }
            double g_out[BE], g_l[BN], out[BE], ld[BN] = {0}, rec[BE * MAX_REC];
            double g_in[BE], g_h[BE * MAX_RAW], g_h2[BE * MAX_RAW], fd_in[BE], fd_h[BE * MAX_RAW];
            th_randn(&rng, BE, 1.0, g_out);
            th_randn(&rng, BN, 1.0, g_l);
            ck_assert_int_eq(dir == NF_FORWARD
                                 ? c.tf->forward(&c.o, BN, BDB, h, in, out, ld, rec)
                                 : c.tf->inverse(&c.o, BN, BDB, h, in, out, ld, rec), NF_OK);
            c.tf->backward(&c.o, (nf_dir)dir, BN, BDB, h, in, out, rec, g_out, g_l, g_in, g_h);
            c.tf->backward(&c.o, (nf_dir)dir, BN, BDB, h, in, out, rec, g_out, g_l, NULL, g_h2);
            ck_assert_mem_eq(g_h2, g_h, nh * sizeof *g_h);
            for (size_t k = 0; k < BE; k++)
              fd_in[k] = block_fd(&c, (nf_dir)dir, h, in, in, k, step[k], g_out, g_l);
            for (size_t k = 0; k < nh; k++)
              fd_h[k] = block_fd(&c, (nf_dir)dir, h, in, h, k, FD_RAW_STEP, g_out, g_l);
            e_in = fmax(e_in, th_rel_err(BE, g_in, fd_in, 1e-3));
            e_h = fmax(e_h, th_rel_err(nh, g_h, fd_h, 1e-3));
          }
        const double tol = regime ? EXTREME_TOL : BACKWARD_TOL;
        printf("%s K=%zu raw %s: backward vs central differences: input %.2e, raw %.2e (<= %g)\n",
               c.label, K, regime ? "+-30" : "N(0,1.5^2)", e_in, e_h, tol);
        ck_assert_double_le(e_in, tol);
        ck_assert_double_le(e_h, tol);
      }
}
END_TEST

/* check_opts: each bad value refused with NF_EINVAL naming its field. */
START_TEST(test_bad_opts)
{
  typedef struct bad_case {
    int circular;
    const char *field;
    size_t bins;
    double tail, min_w, min_h, min_d;
  } bad_case;
  const double nan = NAN, inf = INFINITY;
  const bad_case bad[] = {
    {0, "bins", 0, 3, 1e-3, 1e-3, 1e-3},           {1, "bins", 0, 3, 1e-3, 1e-3, 1e-3},
    {0, "bins", 4097, 3, 1e-3, 1e-3, 1e-3},        {0, "tail_bound", 8, 0, 1e-3, 1e-3, 1e-3},
    {0, "tail_bound", 8, -1, 1e-3, 1e-3, 1e-3},    {0, "tail_bound", 8, nan, 1e-3, 1e-3, 1e-3},
    {0, "tail_bound", 8, inf, 1e-3, 1e-3, 1e-3},   {0, "min_bin_width", 8, 3, -1e-3, 1e-3, 1e-3},
    {1, "min_bin_width", 8, 3, 0.125, 1e-3, 1e-3}, {0, "min_bin_width", 8, 3, nan, 1e-3, 1e-3},
    {0, "min_bin_height", 4, 3, 1e-3, 0.3, 1e-3},  {1, "min_bin_height", 4, 3, 1e-3, inf, 1e-3},
    {0, "min_derivative", 4, 3, 1e-3, 1e-3, 1.0},  {1, "min_derivative", 4, 3, 1e-3, 1e-3, -0.5},
    {0, "min_derivative", 4, 3, 1e-3, 1e-3, nan},
  };
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    const bad_case *b = &bad[k];
    spline_case c = make_case(b->circular, 4);
    c.o.bins = b->bins;
    c.o.tail_bound = b->tail;
    c.o.min_bin_width = b->min_w;
    c.o.min_bin_height = b->min_h;
    c.o.min_derivative = b->min_d;
    ck_assert_int_eq(c.tf->check_opts(&c.o, "fn"), NF_EINVAL);
    ck_assert_msg(strstr(nf_errmsg(), "fn: ") && strstr(nf_errmsg(), b->field),
                  "case %zu: message '%s'", k, nf_errmsg());
  }
  /* the ops serve both splines by the options' kind: another kind is refused */
  spline_case c = make_case(0, 4);
  c.o.kind = NF_TRANSFORMER_AFFINE;
  ck_assert_int_eq(c.tf->check_opts(&c.o, "fn"), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "'affine'"));
  /* the edges that are allowed; circular does not read tail_bound */
  c = make_case(1, 4);
  c.o.tail_bound = NAN;
  c.o.min_bin_width = c.o.min_bin_height = c.o.min_derivative = 0.0;
  ck_assert_int_eq(c.tf->check_opts(&c.o, "fn"), NF_OK);
  c.o.bins = 4096;
  c.o.min_bin_width = c.o.min_bin_height = 0.99 / 4096;
  c.o.min_derivative = 0.999;
  ck_assert_int_eq(c.tf->check_opts(&c.o, "fn"), NF_OK);
}
END_TEST

/* ---- spline couplings ---- */

static const size_t hidden2[2] = {8, 6};

/* The spline options of the coupling tests: K = 6 on [-3, 3] (or the circle). */
static nf_transformer_spec coupling_spec(int circular)
{
  nf_transformer_spec s = nf_transformer_spec_default(circular ? NF_TRANSFORMER_CIRCULAR_SPLINE
                                                               : NF_TRANSFORMER_SPLINE);
  s.bins = 6;
  s.tail_bound = 3.0;
  return s;
}

/* A coupling of the spline (circular) kind: alternate mask of the parity of
   the rng's next draw, hidden widths 8, 6, tanh, initial parameters from rng. */
static nf_layer *make_kind(int circular, size_t dim, size_t ctx_dim, nf_rng *rng)
{
  unsigned char mask[8];
  nf_coupling_mask_alternate(dim, (int)(nf_rng_u64(rng) & 1), mask);
  nf_coupling_opts o = {coupling_spec(circular), mask, 2, hidden2, NF_ACT_TANH, NF_PRECISION_DOUBLE};
  nf_layer *layer = nf_coupling_new(dim, ctx_dim, &o, rng);
  ck_assert_msg(layer != NULL, "nf_coupling_new: %s", nf_errmsg());
  return layer;
}

static nf_layer *make_spline(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_kind(0, dim, ctx_dim, rng);
}

static nf_layer *make_circular(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_kind(1, dim, ctx_dim, rng);
}

/* th_check_bijector on both splines, d = 2 and 5, context 0 and 3, parameters
   ~ N(0, 0.5^2); rows ~ N(0, 2^2) (interval: some in the tails) or uniform
   in [-2.5, 2.5] (circular, inside the circle also after a step). */
START_TEST(test_coupling_bijector)
{
  const size_t dims[2] = {2, 5}, ctxs[2] = {0, 3};
  uint64_t seed = 700;
  for (int circ = 0; circ < 2; circ++)
    for (int di = 0; di < 2; di++)
      for (int ci = 0; ci < 2; ci++, seed++) {
        nf_rng rng;
        nf_rng_seed(&rng, seed);
        size_t d = dims[di], c = ctxs[ci];
        nf_layer *layer = make_kind(circ, d, c, &rng);
        double *theta = th_random_theta(layer, seed + 50, 0.5);
        double z[8 * 5], ctx[8 * 3];
        th_randn(&rng, 8 * d, 2.0, z);
        if (circ)
          for (size_t k = 0; k < 8 * d; k++) z[k] = 2.5 * (2 * nf_rng_uniform(&rng) - 1);
        th_randn(&rng, 8 * c, 1.0, ctx);
        char what[64];
        snprintf(what, sizeof what, "%s coupling d=%zu ctx=%zu", circ ? "circular" : "spline", d,
                 c);
        th_tolerances tol = th_default_tolerances();
        th_check_bijector(what, layer, theta, 8, z, c ? ctx : NULL, &tol);
        free(theta);
        nf_layer_free(layer);
      }
}
END_TEST

/* A coupling with an rng starts as the identity (to 1e-13) in both directions. */
START_TEST(test_coupling_identity_start)
{
  nf_rng rng;
  nf_rng_seed(&rng, 9);
  for (int circ = 0; circ < 2; circ++) {
    nf_layer *layer = make_kind(circ, 4, 0, &rng);
    if (circ) { /* rows inside the circle */
      const double *theta = nf_layer_init_params(layer);
      double z[20 * 4], x[20 * 4], ld[20] = {0};
      double *work = nf_layer_work_new(layer, 20);
      for (size_t k = 0; k < 80; k++) z[k] = 3.0 * (2 * nf_rng_uniform(&rng) - 1);
      for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
        ck_assert_int_eq(nf_layer_apply(layer, theta, (nf_dir)dir, 20, z, NULL, x, ld, NULL, work),
                         NF_OK);
        ck_assert_double_le(th_max_abs_diff(80, x, z), 1e-13);
        for (size_t i = 0; i < 20; i++) ck_assert_double_le(fabs(ld[i]), 1e-13);
      }
      nf_layer_work_free(layer, 20, work);
    } else {
      th_check_identity(layer, 20, 10, 1e-13);
    }
    nf_layer_free(layer);
  }
}
END_TEST

/* A 2-D flow of four spline couplings (theta ~ N(0, 0.3^2)) integrates to
   1 +- 1e-3 on [-9, 9]^2 (600 x 600 midpoints; with theta ~ N(0, 0.5^2) the
   density has spikes narrower than such a grid). */
START_TEST(test_grid_mass)
{
  nf_flow *flow = th_flow_of(make_spline, 2, 0, 4, 808, 0.3);
  th_check_grid_mass("2-D flow of 4 spline couplings", flow, 9.0, 600, 1e-3);
  nf_flow_free(flow);
}
END_TEST

/* Conditional flows and two threads on the interval spline (helpers' battery);
   two threads on a circular flow (rows and contexts inside the circle). */
START_TEST(test_flows_and_threads)
{
  th_check_family_flows(make_spline, 0.3);
  nf_flow *flow = th_flow_of(make_circular, 3, 2, 3, 909, 0.3);
  double x[40 * 3], ctx[40 * 2];
  nf_rng rng;
  nf_rng_seed(&rng, 910);
  for (size_t k = 0; k < 120; k++) x[k] = 3.0 * (2 * nf_rng_uniform(&rng) - 1);
  th_randn(&rng, 80, 1.0, ctx);
  th_check_threads(flow, 40, x, ctx);
  nf_flow_free(flow);
}
END_TEST

/* The temporary folder of this run's model files. */
static char tmp_dir[] = "/tmp/nf_test_spline_XXXXXX";

/* Saves flow to a file, loads it back: the copy has the same theta and the
   same log p on n rows x (context ctx), bit for bit. */
static void expect_same_after_load(const char *label, const nf_flow *flow, size_t n,
                                   const double *x, const double *ctx)
{
  char path[128];
  snprintf(path, sizeof path, "%s/spline.nfm", tmp_dir);
  ck_assert_msg(nf_flow_save(flow, path, NULL) == NF_OK, "%s: save: %s", label, nf_errmsg());
  nf_flow *copy = NULL;
  ck_assert_msg(nf_flow_load(path, NULL, &copy, NULL) == NF_OK, "%s: load: %s", label, nf_errmsg());
  size_t np = nf_flow_n_params(flow);
  ck_assert_uint_eq(nf_flow_n_params(copy), np);
  ck_assert_int_eq(memcmp(nf_flow_params(copy), nf_flow_params(flow), np * sizeof(double)), 0);
  double *la = malloc(n * sizeof *la), *lb = malloc(n * sizeof *lb);
  ck_assert_int_eq(nf_flow_log_prob((nf_flow *)flow, n, x, ctx, la), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob(copy, n, x, ctx, lb), NF_OK);
  for (size_t i = 0; i < n; i++) ck_assert(isfinite(la[i]));
  ck_assert_int_eq(memcmp(la, lb, n * sizeof *la), 0);
  printf("%s: theta and log p of %zu rows identical after save/load\n", label, n);
  free(la);
  free(lb);
  nf_flow_free(copy);
  remove(path);
}

/* Both splines with options off their defaults, with a context, through
   nf_flow_save / nf_flow_load; the saved options are the spline's keys. */
START_TEST(test_save_load)
{
  for (int circ = 0; circ < 2; circ++) {
    nf_rng rng;
    nf_rng_seed(&rng, 1000 + (uint64_t)circ);
    nf_flow *flow = nf_flow_new(3, 2, NF_BASE_STD_NORMAL);
    const unsigned char masks[2][3] = {{1, 0, 1}, {0, 1, 0}};
    for (int k = 0; k < 2; k++) {
      nf_coupling_opts o = {coupling_spec(circ), masks[k], 2, hidden2, NF_ACT_ELU, NF_PRECISION_DOUBLE};
      o.transformer.bins = 7;
      o.transformer.tail_bound = 2.5;
      o.transformer.min_bin_width = 2e-3;
      o.transformer.min_bin_height = 3e-3;
      o.transformer.min_derivative = 0.0123;
      ck_assert_int_eq(nf_flow_push(flow, nf_coupling_new(3, 2, &o, &rng)), NF_OK);
    }
    double *theta = th_random_points(1, nf_flow_n_params(flow), 5, 0.4);
    ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
    double x[30 * 3], ctx[30 * 2];
    for (size_t k = 0; k < 90; k++) x[k] = 3.0 * (2 * nf_rng_uniform(&rng) - 1);
    th_randn(&rng, 60, 1.0, ctx);
    expect_same_after_load(circ ? "circular-spline couplings" : "spline couplings", flow, 30, x,
                           ctx);
    /* the layer's configuration: the transformer's name and its own keys */
    nf_config *cfg = nf_config_new();
    ck_assert_int_eq(nf_layer_type_find("coupling")->save(nf_flow_layer(flow, 0), cfg), NF_OK);
    const char *name = NULL;
    size_t bins = 0;
    double mw = 0;
    ck_assert_int_eq(nf_config_get_string(cfg, "transformer", &name), NF_OK);
    ck_assert_str_eq(name, circ ? "circular-spline" : "spline");
    ck_assert_int_eq(nf_config_get_size(cfg, "bins", &bins), NF_OK);
    ck_assert_uint_eq(bins, 7);
    ck_assert_int_eq(nf_config_get_real(cfg, "min_bin_width", &mw), NF_OK);
    ck_assert_double_eq(mw, 2e-3);
    ck_assert_int_eq(nf_config_has(cfg, "tail_bound"), !circ);
    ck_assert_int_eq(nf_config_has(cfg, "scale_bound"), 0);
    ck_assert_int_eq(nf_config_has(cfg, "kind"), 0);
    nf_config_free(cfg);
    free(theta);
    nf_flow_free(flow);
  }
}
END_TEST

/* A saved spline coupling with a bad or missing option: NF_EFORMAT naming it. */
START_TEST(test_load_refuses)
{
  const char *keys[5] = {"bins", "tail_bound", "min_bin_width", "min_bin_height",
                         "min_derivative"};
  for (int bad = 0; bad < 2; bad++)
    for (size_t k = 0; k < 5; k++) {
      const size_t mask[3] = {1, 0, 0}, hidden[1] = {4};
      nf_config *cfg = nf_config_new();
      nf_config_set_string(cfg, "transformer", "spline");
      nf_config_set_sizes(cfg, "mask", 3, mask);
      nf_config_set_sizes(cfg, "hidden", 1, hidden);
      nf_config_set_string(cfg, "activation", "tanh");
      for (size_t j = 0; j < 5; j++) {
        if (j == k && !bad) continue; /* missing */
        if (j == 0) nf_config_set_int(cfg, keys[j], j == k ? 0 : 5);
        else nf_config_set_real(cfg, keys[j], j == k ? -1.0 : (j == 1 ? 3.0 : 1e-3));
      }
      nf_layer *layer = nf_layer_type_find("coupling")->load(3, 0, cfg, NULL);
      ck_assert_msg(layer == NULL, "loaded with %s %s", keys[k], bad ? "bad" : "missing");
      ck_assert_int_eq(nf_last_status(), NF_EFORMAT);
      ck_assert_msg(strstr(nf_errmsg(), "coupling") && strstr(nf_errmsg(), keys[k]),
                    "message '%s'", nf_errmsg());
      nf_config_free(cfg);
    }
}
END_TEST

/* nf_coupling_new refuses bad spline options naming the field; a circular
   coupling refuses a transformed coordinate outside [-pi, pi] with
   NF_EDOMAIN, leaving out and logdet as they were. */
START_TEST(test_coupling_refuses)
{
  unsigned char mask[3] = {1, 0, 0};
  nf_coupling_opts o = {coupling_spec(0), mask, 2, hidden2, NF_ACT_TANH, NF_PRECISION_DOUBLE}, b;
  b = o; b.transformer.bins = 0;
  ck_assert_ptr_null(nf_coupling_new(3, 0, &b, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_coupling_new: spline bins"));
  b = o; b.transformer.tail_bound = -2;
  ck_assert_ptr_null(nf_coupling_new(3, 0, &b, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "tail_bound"));
  b = o; b.transformer.min_derivative = 2;
  ck_assert_ptr_null(nf_coupling_new(3, 0, &b, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "min_derivative"));
  b = o; b.transformer.min_bin_height = 1.0 / 6;
  ck_assert_ptr_null(nf_coupling_new(3, 0, &b, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "min_bin_height"));

  o.transformer = coupling_spec(1);
  nf_layer *layer = nf_coupling_new(3, 0, &o, NULL);
  ck_assert_ptr_nonnull(layer);
  double z[2 * 3] = {0.1, 0.2, 0.3, 9.0 /* passes: any value */, 0.5, -3.5}, x[6], ld[2] = {1, 2};
  double keep[6] = {7, 7, 7, 7, 7, 7};
  memcpy(x, keep, sizeof x);
  double *work = nf_layer_work_new(layer, 2);
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(layer, nf_layer_init_params(layer), (nf_dir)dir, 2, z, NULL,
                                    x, ld, NULL, work), NF_EDOMAIN);
    ck_assert_msg(strstr(nf_errmsg(), "coupling") && strstr(nf_errmsg(), "outside [-pi, pi]") &&
                  strstr(nf_errmsg(), "row 1"), "message '%s'", nf_errmsg());
    ck_assert_mem_eq(x, keep, sizeof x);
    ck_assert(ld[0] == 1 && ld[1] == 2);
  }
  nf_layer_work_free(layer, 2, work);
  nf_layer_free(layer);
}
END_TEST

int main(void)
{
  setvbuf(stdout, NULL, _IONBF, 0); /* a failing check's figures are printed before it */
  if (!mkdtemp(tmp_dir)) return EXIT_FAILURE;
  const TTest *tests[] = {test_round_trip, test_logdet_fd, test_knots, test_tails_and_domain,
                          test_identity_init, test_backward_fd, test_bad_opts,
                          test_coupling_bijector, test_coupling_identity_start, test_grid_mass,
                          test_flows_and_threads, test_save_load, test_load_refuses,
                          test_coupling_refuses, NULL};
  int rc = th_run_tests("spline", 60, tests);
  rmdir(tmp_dir);
  return rc;
}
