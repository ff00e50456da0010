/* lib/rng.c — xoshiro256** (Blackman & Vigna 2018) seeded through splitmix64. */
#include <math.h>

#include "nflow/rng.h"

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* splitmix64 step: the recommended seeder for the xoshiro family. */
static uint64_t splitmix64(uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void nf_rng_seed(nf_rng *rng, uint64_t seed)
{
  for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

uint64_t nf_rng_u64(nf_rng *rng)
{
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

void nf_rng_jump(nf_rng *rng)
{
  static const uint64_t jump[] = {0x180ec6d33cfd0abaULL, 0xd5a61266f0c9392cULL,
                                  0xa9582618e03fc9aaULL, 0x39abdc4529b1661cULL};
  uint64_t t[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4; i++)
    for (int b = 0; b < 64; b++) {
      if (jump[i] & (UINT64_C(1) << b))
        for (int k = 0; k < 4; k++) t[k] ^= rng->s[k];
      nf_rng_u64(rng);
    }
  for (int k = 0; k < 4; k++) rng->s[k] = t[k];
}

double nf_rng_uniform(nf_rng *rng)
{
  return (double)(nf_rng_u64(rng) >> 11) * 0x1.0p-53;
}

double nf_rng_normal(nf_rng *rng)
{
  double u, v, s;
  do {
    u = 2.0 * nf_rng_uniform(rng) - 1.0;
    v = 2.0 * nf_rng_uniform(rng) - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  return u * sqrt(-2.0 * log(s) / s);
}

double nf_rng_rademacher(nf_rng *rng)
{
  return (nf_rng_u64(rng) >> 63) ? 1.0 : -1.0;
}

uint64_t nf_rng_below(nf_rng *rng, uint64_t n)
{
  /* Lemire 2019: multiply-shift with rejection of the biased low range. */
  unsigned __int128 m = (unsigned __int128)nf_rng_u64(rng) * n;
  uint64_t low = (uint64_t)m;
  if (low < n) {
    uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = (unsigned __int128)nf_rng_u64(rng) * n;
      low = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

void nf_rng_normal_fill(nf_rng *rng, size_t n, double *out)
{
  for (size_t i = 0; i < n; i++) out[i] = nf_rng_normal(rng);
}

void nf_rng_rademacher_fill(nf_rng *rng, size_t n, double *out)
{
  for (size_t i = 0; i < n; i++) out[i] = nf_rng_rademacher(rng);
}

void nf_rng_shuffle(nf_rng *rng, size_t n, size_t *idx)
{
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)nf_rng_below(rng, i);
    size_t t = idx[i - 1];
    idx[i - 1] = idx[j];
    idx[j] = t;
  }
}
