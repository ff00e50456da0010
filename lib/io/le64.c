/* lib/io/le64.c — float64 arrays written and checksummed as little-endian bytes. */
#include "io/io_internal.h"

/* Doubles converted per chunk. */
#define LE64_CHUNK 512

void nf_write_f64le(FILE *f, size_t n, const double *v, uint32_t *crc)
{
  unsigned char buf[8 * LE64_CHUNK];
  for (size_t i = 0; i < n; i += LE64_CHUNK) {
    size_t k = n - i < LE64_CHUNK ? n - i : LE64_CHUNK;
    for (size_t j = 0; j < k; j++) nf_put_f64le(buf + 8 * j, v[i + j]);
    if (crc) *crc = nf_crc32(*crc, buf, 8 * k);
    fwrite(buf, 8, k, f);
  }
}

uint32_t nf_crc32_f64le(uint32_t crc, size_t n, const double *v)
{
  unsigned char b[8];
  for (size_t i = 0; i < n; i++) {
    nf_put_f64le(b, v[i]);
    crc = nf_crc32(crc, b, 8);
  }
  return crc;
}
