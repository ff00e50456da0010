/* nflow/rng.h — seedable random numbers (xoshiro256**), passed explicitly. */
#ifndef NFLOW_RNG_H
#define NFLOW_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Generator state: a value type (copy it to fork a stream); treat fields as private. */
typedef struct nf_rng {
  uint64_t s[4];
} nf_rng;

/* Seed the state from one 64-bit seed through splitmix64 (Vigna). */
void nf_rng_seed(nf_rng *rng, uint64_t seed);

/* Advance by 2^128 draws: gives a non-overlapping stream for another worker. */
void nf_rng_jump(nf_rng *rng);

/* Next raw 64-bit output of xoshiro256** (Blackman & Vigna 2018). */
uint64_t nf_rng_u64(nf_rng *rng);

/* Uniform double in [0, 1) with 53 random bits. */
double nf_rng_uniform(nf_rng *rng);

/* Standard normal draw (Marsaglia polar method; deterministic for a seed). */
double nf_rng_normal(nf_rng *rng);

/* +1 or -1 with probability 1/2 each. */
double nf_rng_rademacher(nf_rng *rng);

/* Uniform integer in [0, n), n >= 1, without modulo bias (Lemire). */
uint64_t nf_rng_below(nf_rng *rng, uint64_t n);

/* Fill out[0..n) with standard normal draws. */
void nf_rng_normal_fill(nf_rng *rng, size_t n, double *out);

/* Fill out[0..n) with Rademacher draws. */
void nf_rng_rademacher_fill(nf_rng *rng, size_t n, double *out);

/* Fisher–Yates shuffle of the index array idx[0..n). */
void nf_rng_shuffle(nf_rng *rng, size_t n, size_t *idx);

#ifdef __cplusplus
}
#endif
#endif
