/* tests/test_permute.c — fixed permutations x[i] = z[perm[i]]: exact gathers,
   reversal, uniformity of random permutations, log-det 0 and vjp against
   finite differences, rejection of non-permutations. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* Applies layer in dir to one row; asserts success and that logdet stays 0.25. */
static void apply_row(const nf_layer *layer, nf_dir dir, const double *in, double *out)
{
  double logdet = 0.25;
  ck_assert_int_eq(nf_layer_apply(layer, NULL, dir, 1, in, NULL, out, &logdet, NULL, NULL), NF_OK);
  ck_assert_double_eq(logdet, 0.25);
}

/* Forward gives x[i] = z[perm[i]] and inverse brings x back, both exactly. */
static void check_gather(const nf_layer *layer, const size_t *perm)
{
  size_t d = nf_layer_dim(layer);
  double *z = calloc(d, sizeof *z), *x = calloc(d, sizeof *x), *z2 = calloc(d, sizeof *z2);
  for (size_t i = 0; i < d; i++) z[i] = 10.0 + (double)i;
  apply_row(layer, NF_FORWARD, z, x);
  apply_row(layer, NF_INVERSE, x, z2);
  for (size_t i = 0; i < d; i++) {
    ck_assert_double_eq(x[i], z[perm[i]]);
    ck_assert_double_eq(z2[i], z[i]);
  }
  free(z); free(x); free(z2);
}

/* Exact round trip and log-det cancellation, log-det 0 against the brute-force
   Jacobian and vjp in both directions, on n rows ~ N(0, 1.5^2) from seed. */
static void check_bijector(const nf_layer *layer, size_t n, uint64_t seed)
{
  th_tolerances exact = th_default_tolerances();
  exact.roundtrip = exact.cancel = 0.0;
  double *z = th_random_points(n, nf_layer_dim(layer), seed, 1.5);
  th_check_bijector(NULL, layer, NULL, n, z, NULL, &exact);
  free(z);
}

START_TEST(explicit_permutation_gathers_exactly)
{
  const size_t perm[5] = {2, 0, 4, 1, 3};
  nf_layer *layer = nf_permute_new(5, perm);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(nf_layer_n_params(layer), 0);
  ck_assert_uint_eq(nf_layer_work_size(layer, 100), 0);
  check_gather(layer, perm);
  check_bijector(layer, 4, 21);
  nf_layer_free(layer);
}
END_TEST

START_TEST(reverse_gathers_exactly)
{
  const size_t dims[] = {1, 2, 6};
  for (size_t k = 0; k < 3; k++) {
    size_t d = dims[k], perm[6];
    for (size_t i = 0; i < d; i++) perm[i] = d - 1 - i;
    nf_layer *layer = nf_reverse_new(d);
    ck_assert_ptr_nonnull(layer);
    check_gather(layer, perm);
    check_bijector(layer, 3, 22 + k);
    nf_layer_free(layer);
  }
}
END_TEST

/* Index of the permutation of {0, 1, 2} a layer realises (0..5). */
static int perm3_index(const nf_layer *layer)
{
  const double z[3] = {0, 1, 2};
  double x[3];
  apply_row(layer, NF_FORWARD, z, x);
  return (int)x[0] * 2 + (x[1] > x[2]);
}

/* Each of the 6 permutations of 3 items appears 1000 +- 5 sd times in 6000
   draws; the stream is reproducible from the seed. */
START_TEST(random_permutations_are_uniform_and_reproducible)
{
  enum { DRAWS = 6000 };
  nf_rng rng, again;
  nf_rng_seed(&rng, 31);
  int count[6] = {0};
  for (int t = 0; t < DRAWS; t++) {
    nf_layer *layer = nf_permute_random_new(3, &rng);
    ck_assert_ptr_nonnull(layer);
    count[perm3_index(layer)]++;
    nf_layer_free(layer);
  }
  double sd = sqrt(DRAWS * (1.0 / 6) * (5.0 / 6));
  for (int k = 0; k < 6; k++) ck_assert_double_le(fabs(count[k] - DRAWS / 6.0), 5 * sd);

  nf_rng_seed(&rng, 32);
  nf_rng_seed(&again, 32);
  nf_layer *a = nf_permute_random_new(9, &rng), *b = nf_permute_random_new(9, &again);
  double z[9], xa[9], xb[9];
  for (size_t i = 0; i < 9; i++) z[i] = (double)i;
  apply_row(a, NF_FORWARD, z, xa);
  apply_row(b, NF_FORWARD, z, xb);
  for (size_t i = 0; i < 9; i++) ck_assert_double_eq(xa[i], xb[i]);
  check_bijector(a, 5, 33);
  nf_layer_free(a);
  nf_layer_free(b);
}
END_TEST

START_TEST(rejects_non_permutations)
{
  const size_t dup[4] = {0, 2, 2, 1}, range[4] = {0, 1, 4, 2};
  ck_assert_ptr_null(nf_permute_new(4, dup));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "perm[2] = 2 repeats perm[1]"));
  ck_assert_ptr_null(nf_permute_new(4, range));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "perm[2] = 4 is out of range"));
  ck_assert_ptr_null(nf_permute_new(4, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_permute_new"));
  ck_assert_ptr_null(nf_permute_new(0, dup));
  ck_assert_ptr_null(nf_reverse_new(0));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_reverse_new"));
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  ck_assert_ptr_null(nf_permute_random_new(3, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "rng is NULL"));
  ck_assert_ptr_null(nf_permute_random_new(0, &rng));
}
END_TEST

START_TEST(rejects_bad_calls)
{
  nf_layer *layer = nf_reverse_new(2);
  th_check_bad_calls(layer, NULL);
  nf_layer_free(layer);
}
END_TEST

/* A random permutation of dim coordinates (takes no context). */
static nf_layer *make_permute(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  (void)ctx_dim;
  return nf_permute_random_new(dim, rng);
}

/* In conditional flows (ctx = NULL) and shared by two threads. */
START_TEST(conditional_flows_and_threads)
{
  th_check_family_flows(make_permute, 0.0);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {explicit_permutation_gathers_exactly, reverse_gathers_exactly,
                          random_permutations_are_uniform_and_reproducible,
                          rejects_non_permutations, rejects_bad_calls,
                          conditional_flows_and_threads, NULL};
  return th_run_tests("permute", 0, tests);
}
