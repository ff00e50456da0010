/* tests/test_rng.c — xoshiro256** reproducibility and the moments of its draws. */
#include <math.h>
#include <stdlib.h>

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
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
