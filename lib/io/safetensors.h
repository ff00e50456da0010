/* lib/io/safetensors.h — the safetensors container (huggingface.co/docs/safetensors):
   an 8-byte little-endian header length N, N bytes of JSON header (padded with
   spaces to an 8-byte boundary), then the data section. nflow writes 1-D
   little-endian float64 tensors and a "crc32" metadata entry (not installed). */
#ifndef NFLOW_IO_SAFETENSORS_H
#define NFLOW_IO_SAFETENSORS_H

#include <stddef.h>
#include "nflow/meta.h"
#include "nflow/status.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* Longest JSON header written or read (a model file's header is a few kB). */
#define NF_SAFETENSORS_HEADER_MAX ((size_t)100 * 1000 * 1000)

/* A named 1-D float64 tensor to write (borrowed). */
typedef struct nf_tensor {
  const char *name;
  size_t n;
  const double *data;
} nf_tensor;

/* A safetensors file read into memory. */
typedef struct nf_safetensors nf_safetensors;

/* Writes path atomically: the JSON header maps each tensor name, in the order
   given, to {"dtype":"F64","shape":[n],"data_offsets":[begin,end]} (contiguous),
   and "__metadata__" to metadata (may be NULL) plus "crc32": 8 lowercase hex
   digits of the CRC-32 over each metadata key and value, each followed by a NUL
   byte, in nf_meta order, then the whole data section. NF_EINVAL on a NULL path,
   a NULL name or data, a name starting with "__", a duplicate name, a metadata key
   "crc32", text that is not UTF-8; NF_EIO (path named) if it cannot be written. */
nf_status nf_safetensors_write(const char *path, const nf_meta *metadata, size_t n_tensors,
                               const nf_tensor *tensors);

/* Reads and checks a safetensors file of float64 tensors (any shape, read
   flattened) with nflow's "crc32" metadata entry. NF_EIO "path: what" if it
   cannot be opened or read (or is a directory, or not a regular file);
   NF_ENOMEM if the header and data section exceed nf_set_alloc_limit;
   NF_EFORMAT "path: what" on any malformed or inconsistent header, layout or
   checksum. *out is set only on success. */
nf_status nf_safetensors_read(const char *path, nf_safetensors **out);

/* Frees st (NULL is a no-op). */
void nf_safetensors_free(nf_safetensors *st);

/* The file's metadata, "crc32" included (valid while st lives). */
const nf_meta *nf_safetensors_meta(const nf_safetensors *st);

/* Number of tensors. */
size_t nf_safetensors_count(const nf_safetensors *st);

/* Name of the i-th tensor in data-section order; NULL for i out of range. */
const char *nf_safetensors_name(const nf_safetensors *st, size_t i);

/* Values of the tensor called name (valid while st lives), their number in *n (if
   n is not NULL); NULL if there is no such tensor. */
const double *nf_safetensors_find(const nf_safetensors *st, const char *name, size_t *n);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
