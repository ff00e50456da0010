/* lib/io/io_internal.h — file-format helpers shared by the model-file and data
   writers (not installed). */
#ifndef NFLOW_IO_INTERNAL_H
#define NFLOW_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include "nflow/config.h"
#include "nflow/status.h"

/* Everything declared here is internal: hidden from the shared library. */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* CRC-32 of IEEE 802.3 / zlib (reflected polynomial 0xEDB88320, initial and final
   xor 0xFFFFFFFF) of buf[0..len), continuing from crc (0 to start): chainable,
   nf_crc32(nf_crc32(0, a, n), b, m) is the CRC of a followed by b. */
uint32_t nf_crc32(uint32_t crc, const void *buf, size_t len);

/* Writes path atomically: write(f, user) fills a temporary file in path's folder,
   which is then flushed, synced and renamed over path, and the folder synced. On
   failure the temporary is removed, an existing file at path is left as it was,
   and the callback's status (with its message) or NF_EIO "path: what: strerror"
   is returned. The callback may ignore fwrite's result: ferror is checked after it. */
nf_status nf_atomic_write(const char *path, nf_status (*write)(FILE *f, void *user), void *user);

/* *size for a file that is not a regular one (a pipe, a device): size unknown. */
#define NF_SIZE_UNKNOWN UINT64_MAX

/* Opens path to read (binary mode) into *f and sets *size to its size in bytes,
   NF_SIZE_UNKNOWN unless it is a regular file. NF_EIO "path: cannot open:
   strerror" or "path: is a directory" (nothing left open). */
nf_status nf_open_input(const char *path, FILE **f, uint64_t *size);

/* Stores v as 8 little-endian bytes at b (IEEE 754 binary64, any host byte order). */
static inline void nf_put_f64le(unsigned char *b, double v)
{
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(u >> (8 * i));
}

/* The double stored as 8 little-endian bytes at b. */
static inline double nf_get_f64le(const unsigned char *b)
{
  uint64_t u = 0;
  for (int i = 8; i-- > 0;) u = u << 8 | b[i];
  double v;
  memcpy(&v, &u, sizeof v);
  return v;
}

/* Writes v[0..n) to f as little-endian float64 (through a small buffer); if crc
   is not NULL, *crc is advanced over the bytes written. Write errors are left
   for ferror. */
void nf_write_f64le(FILE *f, size_t n, const double *v, uint32_t *crc);

/* CRC-32 continued over v[0..n) encoded as little-endian float64. */
uint32_t nf_crc32_f64le(uint32_t crc, size_t n, const double *v);

/* ---- nf_config internals, for the model-file code ---- */

/* An empty configuration; NULL (with nf_errmsg) on no memory. */
nf_config *nf_config_new(void);

/* Frees cfg (NULL is a no-op). */
void nf_config_free(nf_config *cfg);

/* The JSON object of cfg's non-tensor entries (borrowed: valid while cfg lives
   and not modified). */
const json_t *nf_config_json(const nf_config *cfg);

/* A configuration holding a deep copy of the JSON object obj (no tensors); what
   names obj in messages. NF_EFORMAT "what: ... is not a JSON object" otherwise;
   *out is set only on success. */
nf_status nf_config_from_json(const json_t *obj, const char *what, nf_config **out);

/* Number of tensors set on cfg (nf_config_set_tensor), in the order set. */
size_t nf_config_tensor_count(const nf_config *cfg);

/* The i-th tensor of cfg (i < nf_config_tensor_count): its key, length and values
   (borrowed); NULL for an i out of range. */
const char *nf_config_tensor(const nf_config *cfg, size_t i, size_t *n, const double **data);

/* Nests sub in cfg: key holds a copy of sub's JSON entries as an object and
   sub's tensors are added as "key.name" (how a layer that wraps another, such
   as nf_inverse, saves the inner layer's configuration). NF_EINVAL on a NULL
   argument or a key already set; NF_ENOMEM. */
nf_status nf_config_set_config(nf_config *cfg, const char *key, const nf_config *sub);

/* *sub = a new configuration of key's nested object, with the tensors
   "key.name" of cfg as "name" (caller frees with nf_config_free). NF_EFORMAT
   "config key 'key': ..." if it is missing or not an object; *sub is set only
   on success. */
nf_status nf_config_get_config(const nf_config *cfg, const char *key, nf_config **sub);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
