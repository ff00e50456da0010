/* tests/test_dataset.c — the data set, its split, the FFJORD toy sets (moments and
   shapes against their analytic values) and the CSV reader (fixtures in tests/data). */
#define _POSIX_C_SOURCE 200809L /* mkstemp, fdopen */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define PI 3.14159265358979323846
/* Points per toy set in the statistical checks; the tolerances on means, covariances
   and mean square radii are about 5 standard errors of each statistic at this n
   (standard errors measured over 200 seeds). */
#define N_TOY 20000

/* Sentinel for "output left untouched". */
static nf_dataset sentinel_storage;
#define SENTINEL (&sentinel_storage)

/* ---------------------------------------------------------------- data set */

START_TEST(new_is_zero_and_rejects_empty)
{
  nf_dataset *ds = nf_dataset_new(3, 4);
  ck_assert_ptr_nonnull(ds);
  ck_assert_uint_eq(ds->n, 3);
  ck_assert_uint_eq(ds->dim, 4);
  for (size_t i = 0; i < 12; i++) ck_assert_double_eq(ds->x[i], 0.0);
  nf_dataset_free(ds);
  nf_dataset_free(NULL);
  ck_assert_ptr_null(nf_dataset_new(0, 2));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_dataset_new"));
  ck_assert_ptr_null(nf_dataset_new(2, 0));
  ck_assert_ptr_null(nf_dataset_new((size_t)-1 / 4, 3));
}
END_TEST

/* An n x 3 set whose row i is (i, 2i + 0.5, -i). */
static nf_dataset *numbered_rows(size_t n)
{
  nf_dataset *ds = nf_dataset_new(n, 3);
  ck_assert_ptr_nonnull(ds);
  for (size_t i = 0; i < n; i++) {
    ds->x[3 * i] = (double)i;
    ds->x[3 * i + 1] = 2.0 * (double)i + 0.5;
    ds->x[3 * i + 2] = -(double)i;
  }
  return ds;
}

/* Asserts that the rows of a and b together are exactly the rows of numbered_rows(n). */
static void assert_same_rows(size_t n, const nf_dataset *a, const nf_dataset *b)
{
  ck_assert_uint_eq(a->n + b->n, n);
  int *seen = calloc(n, sizeof *seen);
  const nf_dataset *parts[2] = {a, b};
  for (int p = 0; p < 2; p++)
    for (size_t i = 0; i < parts[p]->n; i++) {
      const double *row = parts[p]->x + 3 * i;
      size_t k = (size_t)row[0];
      ck_assert_double_eq(row[0], (double)k);
      ck_assert_uint_lt(k, n);
      ck_assert_double_eq(row[1], 2.0 * (double)k + 0.5);
      ck_assert_double_eq(row[2], -(double)k);
      seen[k]++;
    }
  for (size_t k = 0; k < n; k++) ck_assert_int_eq(seen[k], 1);
  free(seen);
}

START_TEST(split_keeps_rows_and_shuffles)
{
  nf_dataset *ds = numbered_rows(101);
  nf_rng rng, rng2;
  nf_rng_seed(&rng, 11);
  rng2 = rng;
  nf_dataset *a, *b, *a2, *b2;
  ck_assert_int_eq(nf_dataset_split(ds, 0.8, &rng, &a, &b), NF_OK);
  ck_assert_uint_eq(a->n, 81); /* round(80.8) */
  ck_assert_uint_eq(b->n, 20);
  ck_assert_uint_eq(a->dim, 3);
  ck_assert_uint_eq(b->dim, 3);
  assert_same_rows(101, a, b);
  size_t in_place = 0;
  for (size_t i = 0; i < a->n; i++) in_place += a->x[3 * i] == (double)i;
  ck_assert_uint_lt(in_place, 10); /* a shuffle, not a prefix */
  ck_assert_int_eq(nf_dataset_split(ds, 0.8, &rng2, &a2, &b2), NF_OK);
  ck_assert_mem_eq(a->x, a2->x, a->n * 3 * sizeof(double));
  ck_assert_mem_eq(b->x, b2->x, b->n * 3 * sizeof(double));
  nf_dataset_free(a);
  nf_dataset_free(b);
  nf_dataset_free(a2);
  nf_dataset_free(b2);
  ck_assert_int_eq(nf_dataset_split(ds, 0.5, &rng, &a, &b), NF_OK); /* round(50.5) = 51 */
  ck_assert_uint_eq(a->n, 51);
  assert_same_rows(101, a, b);
  nf_dataset_free(a);
  nf_dataset_free(b);
  ck_assert_int_eq(nf_dataset_split(ds, 0.995, &rng, &a, &b), NF_OK); /* round(100.495) */
  ck_assert_uint_eq(b->n, 1);
  nf_dataset_free(a);
  nf_dataset_free(b);
  nf_dataset_free(ds);
}
END_TEST

START_TEST(split_rejects_empty_parts)
{
  nf_dataset *ds = numbered_rows(101), *one = numbered_rows(1);
  nf_dataset *a = SENTINEL, *b = SENTINEL;
  nf_rng rng;
  nf_rng_seed(&rng, 12);
  const double bad[] = {0.0, 0.004, 0.996, 1.0, -0.5, 2.0, NAN, INFINITY};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_int_eq(nf_dataset_split(ds, bad[i], &rng, &a, &b), NF_EINVAL);
    ck_assert_ptr_eq(a, SENTINEL);
    ck_assert_ptr_eq(b, SENTINEL);
  }
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "empty"));
  ck_assert_int_eq(nf_dataset_split(one, 0.5, &rng, &a, &b), NF_EINVAL);
  ck_assert_int_eq(nf_dataset_split(NULL, 0.5, &rng, &a, &b), NF_EINVAL);
  ck_assert_int_eq(nf_dataset_split(ds, 0.5, NULL, &a, &b), NF_EINVAL);
  ck_assert_int_eq(nf_dataset_split(ds, 0.5, &rng, NULL, &b), NF_EINVAL);
  ck_assert_int_eq(nf_dataset_split(ds, 0.5, &rng, &a, NULL), NF_EINVAL);
  ck_assert_ptr_eq(a, SENTINEL);
  ck_assert_ptr_eq(b, SENTINEL);
  nf_dataset_free(ds);
  nf_dataset_free(one);
}
END_TEST

/* ---------------------------------------------------------------- toy sets */

/* Number of NaN or Inf values in a data set. */
static size_t count_nonfinite(const nf_dataset *ds)
{
  size_t bad = 0;
  for (size_t i = 0; i < ds->n * ds->dim; i++) bad += !isfinite(ds->x[i]);
  return bad;
}

/* N_TOY points of the toy set `name` from seed. */
static nf_dataset *toy(const char *name, uint64_t seed)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_dataset *ds = NULL;
  nf_status st = nf_toy_sample(name, N_TOY, &rng, &ds);
  ck_assert_msg(st == NF_OK, "%s: %s", name, nf_errmsg());
  ck_assert_uint_eq(ds->n, N_TOY);
  ck_assert_uint_eq(ds->dim, 2);
  ck_assert_uint_eq(count_nonfinite(ds), 0);
  return ds;
}

/* Sample mean m[2] and covariance c = (var x, var y, cov xy) of a 2-D set. */
typedef struct moments {
  double m[2], c[3], r2; /* r2 = mean of |x|^2 */
} moments;

static moments moments_of(const nf_dataset *ds)
{
  moments mo = {{0, 0}, {0, 0, 0}, 0};
  double n = (double)ds->n;
  for (size_t i = 0; i < ds->n; i++) {
    mo.m[0] += ds->x[2 * i] / n;
    mo.m[1] += ds->x[2 * i + 1] / n;
  }
  for (size_t i = 0; i < ds->n; i++) {
    double x = ds->x[2 * i], y = ds->x[2 * i + 1];
    double dx = x - mo.m[0], dy = y - mo.m[1];
    mo.c[0] += dx * dx / n;
    mo.c[1] += dy * dy / n;
    mo.c[2] += dx * dy / n;
    mo.r2 += (x * x + y * y) / n;
  }
  return mo;
}

#define ASSERT_NEAR(got, want, tol, what)                                                  \
  ck_assert_msg(fabs((got) - (want)) <= (tol), "%s: got %.6g, want %.6g +- %g", what,     \
                (double)(got), (double)(want), (double)(tol))

static void assert_mean(const moments *mo, double mx, double my, double tol)
{
  ASSERT_NEAR(mo->m[0], mx, tol, "mean x");
  ASSERT_NEAR(mo->m[1], my, tol, "mean y");
}

static void assert_cov(const moments *mo, double vx, double vy, double cxy, double tol)
{
  ASSERT_NEAR(mo->c[0], vx, tol, "var x");
  ASSERT_NEAR(mo->c[1], vy, tol, "var y");
  ASSERT_NEAR(mo->c[2], cxy, tol, "cov xy");
}

START_TEST(toy_names_all_sample)
{
  const char *const *names = nf_toy_names();
  const char *want[] = {"8gaussians", "moons",    "circles",      "rings",
                        "pinwheel",   "2spirals", "checkerboard", "swissroll"};
  for (size_t i = 0; i < 8; i++) ck_assert_str_eq(names[i], want[i]);
  ck_assert_ptr_null(names[8]);
  for (size_t n = 1; n <= 7; n++) /* tiny and odd sizes too */
    for (size_t i = 0; names[i]; i++) {
      nf_rng rng;
      nf_rng_seed(&rng, n);
      nf_dataset *ds = NULL;
      ck_assert_int_eq(nf_toy_sample(names[i], n, &rng, &ds), NF_OK);
      ck_assert_uint_eq(ds->n, n);
      ck_assert_uint_eq(count_nonfinite(ds), 0);
      nf_dataset_free(ds);
    }
}
END_TEST

START_TEST(toy_bad_arguments)
{
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  nf_dataset *ds = SENTINEL;
  ck_assert_int_eq(nf_toy_sample("spirals", 10, &rng, &ds), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "'spirals'"));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "checkerboard"));
  ck_assert_int_eq(nf_toy_sample("moons", 0, &rng, &ds), NF_EINVAL);
  ck_assert_int_eq(nf_toy_sample(NULL, 10, &rng, &ds), NF_EINVAL);
  ck_assert_int_eq(nf_toy_sample("moons", 10, NULL, &ds), NF_EINVAL);
  ck_assert_int_eq(nf_toy_sample("moons", 10, &rng, NULL), NF_EINVAL);
  ck_assert_ptr_eq(ds, SENTINEL);
}
END_TEST

START_TEST(toy_seeded_and_deterministic)
{
  for (const char *const *name = nf_toy_names(); *name; name++) {
    nf_dataset *a = toy(*name, 5), *b = toy(*name, 5), *c = toy(*name, 6);
    ck_assert_msg(memcmp(a->x, b->x, 2 * N_TOY * sizeof(double)) == 0, "%s: same seed", *name);
    size_t same = 0;
    for (size_t i = 0; i < 2 * N_TOY; i++) same += a->x[i] == c->x[i];
    ck_assert_msg(same < N_TOY / 100, "%s: %zu equal values across seeds", *name, same);
    nf_dataset_free(a);
    nf_dataset_free(b);
    nf_dataset_free(c);
  }
}
END_TEST

/* Index of the entry of r[0..m) nearest to v. */
static size_t nearest(size_t m, const double *r, double v)
{
  size_t best = 0;
  for (size_t k = 1; k < m; k++)
    if (fabs(v - r[k]) < fabs(v - r[best])) best = k;
  return best;
}

/* 8gaussians: centres 4 (cos k pi/4, sin k pi/4) / 1.414, noise sd 0.5 / 1.414;
   cov = (16/2 + 0.25) / 1.414^2 I; mean distance to the centre = sd sqrt(pi/2). */
START_TEST(toy_8gaussians)
{
  nf_dataset *ds = toy("8gaussians", 21);
  moments mo = moments_of(ds);
  double s = 8.25 / (1.414 * 1.414), sd = 0.5 / 1.414;
  assert_mean(&mo, 0, 0, 0.075);
  assert_cov(&mo, s, s, 0, 0.12);
  double sum[8][2] = {{0}}, count[8] = {0}, dist = 0;
  for (size_t i = 0; i < ds->n; i++) {
    double x = ds->x[2 * i], y = ds->x[2 * i + 1];
    double a = atan2(y, x);
    size_t k = (size_t)lround(a / (PI / 4) + 8) % 8;
    double cx = 4 * cos(PI / 4 * (double)k) / 1.414, cy = 4 * sin(PI / 4 * (double)k) / 1.414;
    dist += hypot(x - cx, y - cy) / (double)ds->n;
    sum[k][0] += x;
    sum[k][1] += y;
    count[k]++;
  }
  ASSERT_NEAR(dist, sd * sqrt(PI / 2), 0.01, "mean distance to centre");
  for (size_t k = 0; k < 8; k++) {
    ASSERT_NEAR(count[k] / (double)ds->n, 0.125, 0.01, "share of a centre");
    ASSERT_NEAR(sum[k][0] / count[k], 4 * cos(PI / 4 * (double)k) / 1.414, 0.035, "centre x");
    ASSERT_NEAR(sum[k][1] / count[k], 4 * sin(PI / 4 * (double)k) / 1.414, 0.035, "centre y");
  }
  nf_dataset_free(ds);
}
END_TEST

/* moons: arcs (2 cos t - 1, 2 sin t - 0.2) and (1 - 2 cos t, 0.8 - 2 sin t), t ~ U[0, pi],
   noise sd 0.2: mean (0, 0.3), var x = 3 + 0.04, var y = 2.34 - 4/pi - 0.09 + 0.04,
   cov xy = 0.5 - 4/pi. */
START_TEST(toy_moons)
{
  nf_dataset *ds = toy("moons", 22);
  moments mo = moments_of(ds);
  assert_mean(&mo, 0, 0.3, 0.01);
  assert_cov(&mo, 3.04, 2.29 - 4 / PI, 0.5 - 4 / PI, 0.025);
  double xmin = 0, xmax = 0;
  for (size_t i = 0; i < ds->n; i++) {
    xmin = fmin(xmin, ds->x[2 * i]);
    xmax = fmax(xmax, ds->x[2 * i]);
  }
  ck_assert_double_ge(xmin, -3 - 6 * 0.2); /* arcs span x in [-3, 3] */
  ck_assert_double_le(xmax, 3 + 6 * 0.2);
  ck_assert_double_le(xmin, -2.8);
  ck_assert_double_ge(xmax, 2.8);
  nf_dataset_free(ds);
}
END_TEST

/* Mean of |x|^2 by class of the nearest radius in r[0..m) (|x|^2 = R^2 + 2 sd^2 on a
   circle of radius R with isotropic noise sd), with the class shares; max |r - R|. */
static double ring_stats(const nf_dataset *ds, size_t m, const double *r, double *r2,
                         double *share)
{
  double worst = 0;
  for (size_t k = 0; k < m; k++) r2[k] = share[k] = 0;
  for (size_t i = 0; i < ds->n; i++) {
    double rad = hypot(ds->x[2 * i], ds->x[2 * i + 1]);
    size_t k = nearest(m, r, rad);
    r2[k] += rad * rad;
    share[k]++;
    worst = fmax(worst, fabs(rad - r[k]));
  }
  for (size_t k = 0; k < m; k++) {
    r2[k] /= share[k];
    share[k] /= (double)ds->n;
  }
  return worst;
}

/* circles: radii 3 and 1.5 (make_circles factor 0.5 scaled by 3), noise sd 3 * 0.08. */
START_TEST(toy_circles)
{
  nf_dataset *ds = toy("circles", 23);
  moments mo = moments_of(ds);
  const double r[2] = {3, 1.5}, sd = 0.24;
  double r2[2], share[2];
  ring_stats(ds, 2, r, r2, share);
  assert_mean(&mo, 0, 0, 0.01);
  assert_cov(&mo, (9 + 2.25) / 4 + sd * sd, (9 + 2.25) / 4 + sd * sd, 0, 0.03);
  for (size_t k = 0; k < 2; k++) {
    ASSERT_NEAR(share[k], 0.5, 0.005, "share of a circle");
    ASSERT_NEAR(r2[k], r[k] * r[k] + 2 * sd * sd, 0.07, "mean square radius");
  }
  nf_dataset_free(ds);
}
END_TEST

/* rings: radii 3, 2.25, 1.5, 0.75 with n/4 points each, noise sd 0.08. */
START_TEST(toy_rings)
{
  nf_dataset *ds = toy("rings", 24);
  moments mo = moments_of(ds);
  const double r[4] = {3, 2.25, 1.5, 0.75}, sd = 0.08;
  double r2[4], share[4];
  double worst = ring_stats(ds, 4, r, r2, share);
  double s = (9 + 2.25 * 2.25 + 2.25 + 0.5625) / 8 + sd * sd;
  assert_mean(&mo, 0, 0, 0.01);
  assert_cov(&mo, s, s, 0, 0.02);
  ck_assert_double_le(worst, 6 * sd);
  for (size_t k = 0; k < 4; k++) {
    ASSERT_NEAR(share[k], 0.25, 1e-3, "share of a ring");
    ASSERT_NEAR(r2[k], r[k] * r[k] + 2 * sd * sd, 0.035, "mean square radius");
  }
  nf_dataset_free(ds);
}
END_TEST

/* pinwheel: |x|^2 = 4 (f0^2 + f1^2), f0 ~ N(1, 0.3^2), f1 ~ N(0, 0.1^2): E|x|^2 = 4.4;
   five-fold symmetry makes the mean 0 and the covariance 2.2 I. */
START_TEST(toy_pinwheel)
{
  nf_dataset *ds = toy("pinwheel", 25);
  moments mo = moments_of(ds);
  assert_mean(&mo, 0, 0, 0.02);
  assert_cov(&mo, 2.2, 2.2, 0, 0.06);
  ASSERT_NEAR(mo.r2, 4.4, 0.09, "mean square radius");
  nf_dataset_free(ds);
}
END_TEST

/* 2spirals: t = 3 pi sqrt(u) has density 2t / (3 pi)^2 on [0, 3 pi], so E t^2 = 4.5 pi^2,
   E t cos t = -4 / (3 pi), E t sin t = 2 - 8 / (9 pi^2); the + arm has mean
   ((4/(3 pi) + 1/4) / 3, (2 - 8/(9 pi^2) + 1/4) / 3) and E|x|^2 = (E t^2 +
   (-E t cos t + E t sin t) / 2 + 1/6) / 9 + 2 * 0.1^2. */
START_TEST(toy_2spirals)
{
  nf_dataset *ds = toy("2spirals", 26);
  moments mo = moments_of(ds);
  double r2 = (4.5 * PI * PI + 0.5 * (4 / (3 * PI) + 2 - 8 / (9 * PI * PI)) + 1.0 / 6) / 9 + 0.02;
  assert_mean(&mo, 0, 0, 0.06);
  ASSERT_NEAR(mo.r2, r2, 0.11, "mean square radius");
  double arm[2] = {0, 0}, rmax = 0;
  for (size_t i = 0; i < ds->n; i++) {
    double s = i % 2 ? -1.0 : 1.0;
    arm[0] += s * ds->x[2 * i] / (double)ds->n;
    arm[1] += s * ds->x[2 * i + 1] / (double)ds->n;
    rmax = fmax(rmax, hypot(ds->x[2 * i], ds->x[2 * i + 1]));
  }
  ASSERT_NEAR(arm[0], (4 / (3 * PI) + 0.25) / 3, 0.06, "arm mean x");
  ASSERT_NEAR(arm[1], (2 - 8 / (9 * PI * PI) + 0.25) / 3, 0.06, "arm mean y");
  ck_assert_double_le(rmax, (3 * PI + 0.5 * sqrt(2)) / 3 + 6 * 0.1);
  ck_assert_double_ge(rmax, 3 * PI / 3 - 0.2);
  nf_dataset_free(ds);
}
END_TEST

/* checkerboard: uniform on the 8 cells of side 2 of [-4, 4)^2 with even index sum. */
START_TEST(toy_checkerboard)
{
  nf_dataset *ds = toy("checkerboard", 27);
  moments mo = moments_of(ds);
  assert_mean(&mo, 0, 0, 0.09);
  /* x and y are uniform on [-4, 4) (var 64/12); E xy = 4 * mean over the black cells
     of the product of their centres = 4 * 2/8. */
  assert_cov(&mo, 16.0 / 3, 16.0 / 3, 1.0, 0.18);
  double count[4][4] = {{0}};
  for (size_t i = 0; i < ds->n; i++) {
    double x = ds->x[2 * i], y = ds->x[2 * i + 1];
    ck_assert(x >= -4 && x < 4 && y >= -4 && y < 4);
    count[(int)floor(x / 2) + 2][(int)floor(y / 2) + 2]++;
  }
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) {
      double share = count[i][j] / (double)ds->n;
      if ((i + j) % 2) ck_assert_double_eq(share, 0.0);
      else ASSERT_NEAR(share, 0.125, 0.01, "share of a black cell");
    }
  nf_dataset_free(ds);
}
END_TEST

/* swissroll: (t cos t, t sin t) / 5 + N(0, 0.2^2 I), t ~ U[1.5 pi, 4.5 pi]: E t cos t = 2,
   E t sin t = 2 / (3 pi), E t^2 = 9.75 pi^2, so mean (0.4, 2 / (15 pi)) and
   E|x|^2 = (9.75 pi^2 + 2) / 25. */
START_TEST(toy_swissroll)
{
  nf_dataset *ds = toy("swissroll", 28);
  moments mo = moments_of(ds);
  assert_mean(&mo, 0.4, 2 / (15 * PI), 0.05);
  ASSERT_NEAR(mo.r2, (9.75 * PI * PI + 2) / 25, 0.08, "mean square radius");
  double rmin = INFINITY, rmax = 0;
  for (size_t i = 0; i < ds->n; i++) {
    double r = hypot(ds->x[2 * i], ds->x[2 * i + 1]);
    rmin = fmin(rmin, r);
    rmax = fmax(rmax, r);
  }
  ck_assert_double_le(rmax, (4.5 * PI + 6) / 5);
  ck_assert_double_ge(rmax, 4.5 * PI / 5 - 0.2);
  ck_assert_double_le(rmin, 1.5 * PI / 5);
  nf_dataset_free(ds);
}
END_TEST

/* ---------------------------------------------------------------- CSV reader */

/* Reads fixture name, asserting success and the shape n x dim. */
static nf_dataset *read_ok(const char *name, size_t n, size_t dim)
{
  nf_dataset *ds = NULL;
  nf_status st = nf_dataset_read_csv(th_data_path(name), &ds);
  ck_assert_msg(st == NF_OK, "%s: %s", name, nf_errmsg());
  ck_assert_uint_eq(ds->n, n);
  ck_assert_uint_eq(ds->dim, dim);
  return ds;
}

START_TEST(csv_reads_good_files)
{
  nf_dataset *ds = read_ok("csv_plain.csv", 3, 2); /* no header, blank lines */
  const double plain[] = {1, 2, 3.5, -4, 0.5, 6};
  ck_assert_mem_eq(ds->x, plain, sizeof plain);
  nf_dataset_free(ds);
  ds = read_ok("csv_header.csv", 2, 3); /* header, blanks, hex, no final newline */
  const double header[] = {1.25, -2000, 16, -0.5, 4, 7};
  ck_assert_mem_eq(ds->x, header, sizeof header);
  nf_dataset_free(ds);
  ds = read_ok("csv_crlf.csv", 2, 2); /* UTF-8 byte order mark, CRLF, header, blank line */
  const double crlf[] = {1, 2, 3, 4};
  ck_assert_mem_eq(ds->x, crlf, sizeof crlf);
  nf_dataset_free(ds);
  ds = read_ok("csv_comments.csv", 2, 2); /* '#' lines before the header, between rows, at the end */
  ck_assert_mem_eq(ds->x, crlf, sizeof crlf);
  nf_dataset_free(ds);
  ds = read_ok("csv_bom_comment.csv", 1, 2); /* a comment right after the UTF-8 byte order mark */
  const double bom[] = {5, 6};
  ck_assert_mem_eq(ds->x, bom, sizeof bom);
  nf_dataset_free(ds);
}
END_TEST

START_TEST(csv_refuses_other_encodings_and_line_ends)
{
  const char *utf16 = ": looks like UTF-16; save as UTF-8";
  th_assert_read_error(nf_dataset_read_csv, "csv_utf16le.csv", NF_EFORMAT, utf16);
  th_assert_read_error(nf_dataset_read_csv, "csv_utf16be.csv", NF_EFORMAT, utf16);
  th_assert_read_error(nf_dataset_read_csv, "csv_utf16_nobom.csv", NF_EFORMAT, utf16); /* NUL bytes */
  th_assert_read_error(nf_dataset_read_csv, "csv_cr_only.csv", NF_EFORMAT,
                       ": lines end in CR only (classic Mac); convert to LF or CRLF");
  th_assert_read_error(nf_dataset_read_csv, ".", NF_EIO, ": is a directory");
  nf_dataset *ds = SENTINEL;
  if (access("/dev/zero", R_OK) == 0) { /* endless NUL bytes: refused at the first */
    ck_assert_int_eq(nf_dataset_read_csv("/dev/zero", &ds), NF_EFORMAT);
    ck_assert_str_eq(nf_errmsg(), "/dev/zero: looks like UTF-16; save as UTF-8");
  }
  ck_assert_ptr_eq(ds, SENTINEL);
}
END_TEST

/* nf_dataset_read_csv_opts with lines of at most 32 bytes. */
static nf_status read_csv_max32(const char *path, nf_dataset **out)
{
  const nf_csv_opts opts = {.max_line_bytes = 32};
  return nf_dataset_read_csv_opts(path, &opts, out);
}

/* A temporary file of one line of `len` digits '0' (CRLF after it unless
   bare), its path in path (a mkstemp template). */
static void write_one_line(char *path, size_t len, int bare)
{
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  FILE *f = fdopen(fd, "w");
  ck_assert_ptr_nonnull(f);
  for (size_t i = 0; i < len; i++) fputc('0', f);
  if (!bare) fputs("\r\n", f);
  ck_assert_int_eq(fclose(f), 0);
}

START_TEST(csv_caps_the_line_length)
{
  th_assert_read_error(read_csv_max32, "csv_long_line.csv", NF_EFORMAT,
                       ":2: line longer than 32 bytes (the limit, nf_csv_opts.max_line_bytes)");
  nf_dataset *ds = NULL;
  ck_assert_int_eq(read_csv_max32(th_data_path("csv_plain.csv"), &ds), NF_OK); /* short lines */
  nf_dataset_free(ds);
  ck_assert_int_eq(nf_dataset_read_csv_opts(th_data_path("csv_long_line.csv"), NULL, &ds), NF_EFORMAT);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), ":2:3: expected 2 fields, found 20"));
  /* the default limit, 1 MiB: a line of exactly that many bytes (CRLF after it) is read */
  char path[] = "csv_line_XXXXXX";
  write_one_line(path, NF_CSV_MAX_LINE_DEFAULT, 0);
  ds = NULL;
  nf_status st = nf_dataset_read_csv(path, &ds);
  unlink(path);
  ck_assert_msg(st == NF_OK, "%s", nf_errmsg());
  ck_assert_uint_eq(ds->n * ds->dim, 1);
  ck_assert_double_eq(ds->x[0], 0.0);
  nf_dataset_free(ds);
  char over[] = "csv_line_XXXXXX"; /* one byte more, and no line end */
  write_one_line(over, NF_CSV_MAX_LINE_DEFAULT + 1, 1);
  ds = SENTINEL;
  st = nf_dataset_read_csv(over, &ds);
  unlink(over);
  ck_assert_int_eq(st, NF_EFORMAT);
  ck_assert_ptr_eq(ds, SENTINEL);
  char want[160];
  snprintf(want, sizeof want, "%s:1: line longer than 1048576 bytes (the limit, "
           "nf_csv_opts.max_line_bytes)", over);
  ck_assert_str_eq(nf_errmsg(), want);
}
END_TEST

/* nf_dataset_read_csv under an allocation limit of 64 bytes. */
static nf_status read_csv_limit64(const char *path, nf_dataset **out)
{
  nf_set_alloc_limit(64);
  nf_status st = nf_dataset_read_csv(path, out);
  nf_set_alloc_limit(0);
  return st;
}

START_TEST(csv_honours_the_allocation_limit)
{
  ck_assert_uint_eq(nf_alloc_limit(), 0); /* the default: none */
  /* the first row: 64 bytes of line buffer + 2 values */
  th_assert_read_error(read_csv_limit64, "csv_plain.csv", NF_ENOMEM,
                       ": needs 80 bytes, more than the allocation limit of 64 bytes");
  nf_set_alloc_limit(80); /* 64 bytes of line buffer, then 2 values */
  ck_assert_uint_eq(nf_alloc_limit(), 80);
  nf_dataset *ds = NULL;
  nf_status st = nf_dataset_read_csv(th_data_path("csv_header.csv"), &ds);
  nf_set_alloc_limit(0);
  ck_assert_int_eq(st, NF_ENOMEM);
}
END_TEST

START_TEST(csv_reports_line_and_column)
{
  th_assert_read_error(nf_dataset_read_csv, "csv_ragged_long.csv", NF_EFORMAT, ":3:4: expected 3 fields, found 4");
  th_assert_read_error(nf_dataset_read_csv, "csv_ragged_short.csv", NF_EFORMAT, ":4:3: expected 3 fields, found 2");
  th_assert_read_error(nf_dataset_read_csv, "csv_header_width.csv", NF_EFORMAT,
                   ":2:3: expected 2 fields (as in the header), found 3");
  th_assert_read_error(nf_dataset_read_csv, "csv_text.csv", NF_EFORMAT, ":2:2: not a number: 'abc'");
  th_assert_read_error(nf_dataset_read_csv, "csv_empty_field.csv", NF_EFORMAT, ":2:2: empty field");
  th_assert_read_error(nf_dataset_read_csv, "csv_nan.csv", NF_EFORMAT, ":3:2: non-finite value: 'nan'");
  th_assert_read_error(nf_dataset_read_csv, "csv_inf.csv", NF_EFORMAT, ":2:2: non-finite value: '-inf'");
  th_assert_read_error(nf_dataset_read_csv, "csv_overflow.csv", NF_EFORMAT, ":2:2: non-finite value: '1e999'");
  th_assert_read_error(nf_dataset_read_csv, "csv_empty.csv", NF_EFORMAT, ": no data rows (empty file)");
  th_assert_read_error(nf_dataset_read_csv, "csv_header_only.csv", NF_EFORMAT, ": no data rows (only a header)");
}
END_TEST

START_TEST(csv_missing_file_and_bad_arguments)
{
  nf_dataset *ds = SENTINEL;
  ck_assert_int_eq(nf_dataset_read_csv(th_data_path("no_such_file.csv"), &ds), NF_EIO);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "no_such_file.csv"));
  ck_assert_int_eq(nf_dataset_read_csv(NULL, &ds), NF_EINVAL);
  ck_assert_int_eq(nf_dataset_read_csv(th_data_path("csv_plain.csv"), NULL), NF_EINVAL);
  ck_assert_ptr_eq(ds, SENTINEL);
}
END_TEST

/* A temporary file with a header of names and `rows` lines of `width` numbers (i + j / 8), the
   last field of a long line quoted badly if bad_last is set. */
static void write_long_csv(char *path, size_t rows, size_t width, int bad_last)
{
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  FILE *f = fdopen(fd, "w");
  ck_assert_ptr_nonnull(f);
  for (size_t j = 0; j < width; j++) fprintf(f, "c%zu%s", j, j + 1 == width ? "\n" : ",");
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < width; j++) {
      int last = j + 1 == width;
      if (last && bad_last && i + 1 == rows) fputs("1.5.5\n", f);
      else fprintf(f, "%.17g%s", (double)i + (double)j / 8, last ? "\n" : ",");
    }
  ck_assert_int_eq(fclose(f), 0);
}

START_TEST(csv_long_lines)
{
  enum { ROWS = 40, WIDTH = 5000 }; /* lines of about 40 kB */
  char path[] = "csv_long_XXXXXX";
  write_long_csv(path, ROWS, WIDTH, 0);
  nf_dataset *ds = NULL;
  nf_status st = nf_dataset_read_csv(path, &ds);
  unlink(path);
  ck_assert_msg(st == NF_OK, "%s", nf_errmsg());
  ck_assert_uint_eq(ds->n, ROWS);
  ck_assert_uint_eq(ds->dim, WIDTH);
  for (size_t i = 0; i < ROWS; i++)
    for (size_t j = 0; j < WIDTH; j++)
      ck_assert_double_eq(ds->x[i * WIDTH + j], (double)i + (double)j / 8);
  nf_dataset_free(ds);
  char bad[] = "csv_long_XXXXXX";
  write_long_csv(bad, ROWS, WIDTH, 1);
  ds = SENTINEL;
  st = nf_dataset_read_csv(bad, &ds);
  unlink(bad);
  ck_assert_int_eq(st, NF_EFORMAT);
  ck_assert_ptr_eq(ds, SENTINEL);
  char want[128];
  snprintf(want, sizeof want, "%s:%d:%d: not a number: '1.5.5'", bad, ROWS + 1, WIDTH);
  ck_assert_str_eq(nf_errmsg(), want);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {new_is_zero_and_rejects_empty, split_keeps_rows_and_shuffles,
                          split_rejects_empty_parts, toy_names_all_sample, toy_bad_arguments,
                          toy_seeded_and_deterministic, toy_8gaussians, toy_moons, toy_circles,
                          toy_rings, toy_pinwheel, toy_2spirals, toy_checkerboard,
                          toy_swissroll, csv_reads_good_files, csv_reports_line_and_column,
                          csv_missing_file_and_bad_arguments, csv_long_lines,
                          csv_refuses_other_encodings_and_line_ends, csv_caps_the_line_length,
                          csv_honours_the_allocation_limit, NULL};
  return th_run_tests("dataset", 60, tests);
}
