/* tests/test_rng.c — xoshiro256** reproducibility and the moments of its draws;
   counter-based noise: uniformity, independence, chunking invariance. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

START_TEST(same_seed_same_stream)
{
  nf_rng a, b;
  nf_rng_seed(&a, 42);
  nf_rng_seed(&b, 42);
  for (int i = 0; i < 1000; i++) ck_assert_uint_eq(nf_rng_u64(&a), nf_rng_u64(&b));
  nf_rng_seed(&b, 43);
  ck_assert_uint_ne(nf_rng_u64(&a), nf_rng_u64(&b));
}
END_TEST

START_TEST(jump_gives_another_stream)
{
  nf_rng a, b;
  nf_rng_seed(&a, 7);
  b = a;
  nf_rng_jump(&b);
  int equal = 0;
  for (int i = 0; i < 1000; i++) equal += nf_rng_u64(&a) == nf_rng_u64(&b);
  ck_assert_int_eq(equal, 0);
}
END_TEST

/* Mean and variance of N draws within 5 standard errors of the truth (seed 1). */
static void check_moments(double (*draw)(nf_rng *), double mean, double var)
{
  enum { N = 200000 };
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  double s = 0, s2 = 0;
  for (int i = 0; i < N; i++) {
    double v = draw(&rng);
    s += v;
    s2 += v * v;
  }
  double m = s / N, v = s2 / N - m * m;
  ck_assert_double_le(fabs(m - mean), 5 * sqrt(var / N));
  ck_assert_double_le(fabs(v - var), 5 * var * sqrt(2.0 / N) + 5 * sqrt(var / N));
}

START_TEST(uniform_normal_rademacher_moments)
{
  check_moments(nf_rng_uniform, 0.5, 1.0 / 12);
  check_moments(nf_rng_normal, 0.0, 1.0);
  check_moments(nf_rng_rademacher, 0.0, 1.0);
}
END_TEST

START_TEST(uniform_in_unit_interval_and_rademacher_signs)
{
  nf_rng rng;
  nf_rng_seed(&rng, 3);
  for (int i = 0; i < 100000; i++) {
    double u = nf_rng_uniform(&rng), r = nf_rng_rademacher(&rng);
    ck_assert(u >= 0.0 && u < 1.0);
    ck_assert(r == 1.0 || r == -1.0);
  }
}
END_TEST

START_TEST(normal_tail_probability)
{
  /* P(|Z| > 2) = 0.0455003; 10^6 draws give a standard error of 2.1e-4. */
  enum { N = 1000000 };
  nf_rng rng;
  nf_rng_seed(&rng, 11);
  int tail = 0;
  for (int i = 0; i < N; i++) tail += fabs(nf_rng_normal(&rng)) > 2.0;
  ck_assert_double_le(fabs((double)tail / N - 0.0455003), 5 * 2.1e-4);
}
END_TEST

START_TEST(below_is_uniform_and_shuffle_permutes)
{
  enum { N = 70000, K = 7 };
  nf_rng rng;
  nf_rng_seed(&rng, 5);
  int count[K] = {0};
  for (int i = 0; i < N; i++) {
    uint64_t v = nf_rng_below(&rng, K);
    ck_assert_uint_lt(v, K);
    count[v]++;
  }
  for (int k = 0; k < K; k++) /* binomial sd = sqrt(N p (1-p)) ~ 92 */
    ck_assert_int_le(abs(count[k] - N / K), 5 * 92);
  size_t idx[100];
  int seen[100] = {0};
  for (size_t i = 0; i < 100; i++) idx[i] = i;
  nf_rng_shuffle(&rng, 100, idx);
  size_t moved = 0;
  for (size_t i = 0; i < 100; i++) {
    seen[idx[i]]++;
    moved += idx[i] != i;
  }
  for (size_t i = 0; i < 100; i++) ck_assert_int_eq(seen[i], 1);
  ck_assert_uint_gt(moved, 80);
}
END_TEST

START_TEST(fill_matches_single_draws)
{
  nf_rng a, b;
  nf_rng_seed(&a, 9);
  b = a;
  double v[64], w[64];
  nf_rng_normal_fill(&a, 32, v);
  nf_rng_rademacher_fill(&a, 32, v + 32);
  for (int i = 0; i < 32; i++) w[i] = nf_rng_normal(&b);
  for (int i = 32; i < 64; i++) w[i] = nf_rng_rademacher(&b);
  for (int i = 0; i < 64; i++) ck_assert(v[i] == w[i]);
}
END_TEST

START_TEST(null_generator_is_a_no_op)
{
  double out[3] = {7, 8, 9};
  size_t idx[3] = {2, 0, 1};
  nf_rng_seed(NULL, 1);
  nf_rng_jump(NULL);
  ck_assert_uint_eq(nf_rng_u64(NULL), 0);
  ck_assert(nf_rng_uniform(NULL) == 0.0);
  ck_assert(nf_rng_normal(NULL) == 0.0);
  ck_assert(nf_rng_rademacher(NULL) == 0.0);
  ck_assert_uint_eq(nf_rng_below(NULL, 10), 0);
  nf_rng_normal_fill(NULL, 3, out);
  nf_rng_rademacher_fill(NULL, 3, out);
  nf_rng_shuffle(NULL, 3, idx);
  ck_assert(out[0] == 7 && out[1] == 8 && out[2] == 9);
  ck_assert(idx[0] == 2 && idx[1] == 0 && idx[2] == 1);
  nf_rng rng;
  nf_rng_seed(&rng, 4);
  ck_assert_uint_eq(nf_rng_below(&rng, 0), 0);
}
END_TEST

/* ---- counter-based noise ------------------------------------------------ */

enum { NOISE_N = 1000000 };

/* [0, 1) from the top 53 bits, as the library makes its uniforms. */
static double to_unit(uint64_t u) { return (double)(u >> 11) * 0x1.0p-53; }

/* Asserts the sample mean and variance of v[0..n) are within 5 standard errors of
   mean and var, for a distribution with kurtosis kurt (var of the sample variance
   (kurt - 1) var^2 / n, plus the squared mean error, 25 var / n at 5 SE). */
static void assert_moments(size_t n, const double *v, double mean, double var, double kurt)
{
  double s = 0, s2 = 0;
  for (size_t i = 0; i < n; i++) s += v[i];
  double m = s / (double)n;
  for (size_t i = 0; i < n; i++) s2 += (v[i] - m) * (v[i] - m);
  double vs = s2 / (double)n, N = (double)n;
  ck_assert_msg(fabs(m - mean) <= 5 * sqrt(var / N), "mean %.6g, want %.6g", m, mean);
  ck_assert_msg(fabs(vs - var) <= 5 * sqrt((kurt - 1) * var * var / N) + 25 * var / N,
                "variance %.6g, want %.6g", vs, var);
}

/* Pearson correlation of a[0..n) and b[0..n). */
static double correlation(size_t n, const double *a, const double *b)
{
  double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; i++) {
    ma += a[i];
    mb += b[i];
  }
  ma /= (double)n;
  mb /= (double)n;
  for (size_t i = 0; i < n; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / sqrt(saa * sbb);
}

START_TEST(noise_u64_uniform_and_independent)
{
  /* key from seed 2024, stream 0; 10^6 counters: uniform moments (kurtosis 9/5), every bit
     set half the time, and |correlation| < 5 / sqrt(N) between adjacent counters, adjacent
     raw keys and adjacent derived streams, all within 5 standard errors */
  uint64_t key = nf_noise_key(2024, 0), key2 = nf_noise_key(2024, 1);
  double *u = malloc((NOISE_N + 1) * sizeof *u), *v = malloc(NOISE_N * sizeof *v),
         *w = malloc(NOISE_N * sizeof *w);
  ck_assert(u && v && w);
  size_t ones[64] = {0};
  for (size_t c = 0; c <= NOISE_N; c++) {
    uint64_t x = nf_noise_u64(key, c);
    u[c] = to_unit(x);
    if (c == NOISE_N) break;
    for (int b = 0; b < 64; b++) ones[b] += (x >> b) & 1;
    v[c] = to_unit(nf_noise_u64(key + 1, c));
    w[c] = to_unit(nf_noise_u64(key2, c));
  }
  assert_moments(NOISE_N, u, 0.5, 1.0 / 12, 9.0 / 5);
  double se = 5 / sqrt((double)NOISE_N);
  for (int b = 0; b < 64; b++) /* binomial sd sqrt(N / 4) = 500 */
    ck_assert_msg(fabs((double)ones[b] - NOISE_N / 2.0) <= 5 * 500, "bit %d set %zu times", b,
                  ones[b]);
  double r_counter = correlation(NOISE_N, u, u + 1), r_key = correlation(NOISE_N, u, v),
         r_stream = correlation(NOISE_N, u, w);
  ck_assert_msg(fabs(r_counter) < se && fabs(r_key) < se && fabs(r_stream) < se,
                "correlations: counters %.3g, keys %.3g, streams %.3g (bound %.3g)", r_counter,
                r_key, r_stream, se);
  ck_assert_uint_ne(nf_noise_key(2024, 0), nf_noise_key(2025, 0));
  ck_assert_uint_eq(nf_noise_u64(key, 12345), nf_noise_u64(key, 12345));
  free(u);
  free(v);
  free(w);
}
END_TEST

START_TEST(noise_fill_does_not_depend_on_chunking)
{
  /* rows [0, 100) at once equal [0, 40) then [40, 100) with row0 = 40, bit for bit, for
     every kind (key from seed 5, stream 3; d = 3) */
  enum { ROWS = 100, D = 3 };
  uint64_t key = nf_noise_key(5, 3);
  for (int k = 0; k <= NF_NOISE_UNIFORM; k++) {
    double whole[ROWS * D], parts[ROWS * D], other[ROWS * D];
    nf_noise_fill((nf_noise_kind)k, key, 0, ROWS, D, whole);
    nf_noise_fill((nf_noise_kind)k, key, 0, 40, D, parts);
    nf_noise_fill((nf_noise_kind)k, key, 40, ROWS - 40, D, parts + 40 * D);
    ck_assert_msg(memcmp(whole, parts, sizeof whole) == 0, "%s: chunked fill differs",
                  nf_noise_kind_name((nf_noise_kind)k));
    nf_noise_fill((nf_noise_kind)k, key + 1, 0, ROWS, D, other);
    ck_assert_msg(memcmp(whole, other, sizeof whole) != 0, "%s: another key, same noise",
                  nf_noise_kind_name((nf_noise_kind)k));
  }
  double out[2] = {3, 4};
  nf_noise_fill((nf_noise_kind)9, key, 0, 1, 2, out);
  ck_assert(out[0] == 3 && out[1] == 4);
  nf_noise_fill(NF_NOISE_NORMAL, key, 0, 1, 2, NULL);
}
END_TEST

START_TEST(noise_fill_moments)
{
  /* 10^6 entries (250000 x 4, key from seed 77, stream 0) of each kind, 5 standard errors:
     normal mean 0, variance 1 (kurtosis 3), and P(|Z| > 2) = 0.0455003 (sd 2.1e-4);
     Rademacher only +-1 with +1 counted N/2 within 5 sqrt(N/4); uniform in [0, 1) with
     mean 1/2, variance 1/12 */
  enum { ROWS = 250000, D = 4 };
  size_t n = (size_t)ROWS * D;
  uint64_t key = nf_noise_key(77, 0);
  double *v = malloc(n * sizeof *v);
  ck_assert_ptr_nonnull(v);
  nf_noise_fill(NF_NOISE_NORMAL, key, 0, ROWS, D, v);
  assert_moments(n, v, 0.0, 1.0, 3.0);
  size_t tail = 0;
  for (size_t i = 0; i < n; i++) tail += fabs(v[i]) > 2.0;
  ck_assert_double_le(fabs((double)tail / (double)n - 0.0455003), 5 * 2.1e-4);
  nf_noise_fill(NF_NOISE_RADEMACHER, key, 0, ROWS, D, v);
  size_t plus = 0, bad = 0; /* (one assertion per array: Check's are slow) */
  for (size_t i = 0; i < n; i++) {
    bad += v[i] != 1.0 && v[i] != -1.0;
    plus += v[i] == 1.0;
  }
  ck_assert_uint_eq(bad, 0);
  ck_assert_double_le(fabs((double)plus - (double)n / 2), 5 * sqrt((double)n / 4));
  nf_noise_fill(NF_NOISE_UNIFORM, key, 0, ROWS, D, v);
  bad = 0;
  for (size_t i = 0; i < n; i++) bad += !(v[i] >= 0.0 && v[i] < 1.0);
  ck_assert_uint_eq(bad, 0);
  assert_moments(n, v, 0.5, 1.0 / 12, 9.0 / 5);
  free(v);
}
END_TEST

START_TEST(noise_kind_names_and_parse)
{
  for (int k = 0; k <= NF_NOISE_UNIFORM; k++) {
    nf_noise_kind got = NF_NOISE_UNIFORM;
    ck_assert_int_eq(nf_noise_kind_parse(nf_noise_kind_name((nf_noise_kind)k), &got), NF_OK);
    ck_assert_int_eq(got, k);
  }
  ck_assert_str_eq(nf_noise_kind_name(NF_NOISE_RADEMACHER), "rademacher");
  ck_assert_str_eq(nf_noise_kind_name((nf_noise_kind)9), "?");
  nf_noise_kind kind = NF_NOISE_RADEMACHER;
  ck_assert_int_eq(nf_noise_kind_parse("gaussian", &kind), NF_EINVAL);
  ck_assert_int_eq(kind, NF_NOISE_RADEMACHER);
  ck_assert(strstr(nf_errmsg(), "gaussian") != NULL);
  ck_assert_int_eq(nf_noise_kind_parse(NULL, &kind), NF_EINVAL);
  ck_assert_int_eq(nf_noise_kind_parse("normal", NULL), NF_EINVAL);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("rng");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, same_seed_same_stream);
  tcase_add_test(tc, jump_gives_another_stream);
  tcase_add_test(tc, uniform_normal_rademacher_moments);
  tcase_add_test(tc, uniform_in_unit_interval_and_rademacher_signs);
  tcase_add_test(tc, normal_tail_probability);
  tcase_add_test(tc, below_is_uniform_and_shuffle_permutes);
  tcase_add_test(tc, fill_matches_single_draws);
  tcase_add_test(tc, null_generator_is_a_no_op);
  tcase_add_test(tc, noise_u64_uniform_and_independent);
  tcase_add_test(tc, noise_fill_does_not_depend_on_chunking);
  tcase_add_test(tc, noise_fill_moments);
  tcase_add_test(tc, noise_kind_names_and_parse);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
