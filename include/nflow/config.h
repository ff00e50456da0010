/* nflow/config.h — a layer family's configuration as saved in a model file:
   flat string keys mapping to integers, reals, strings and lists of sizes (kept
   as JSON), and float64 tensors (kept in the file's data section). */
#ifndef NFLOW_CONFIG_H
#define NFLOW_CONFIG_H

#include <stddef.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_config nf_config;

/* Writers: add key with a copy of the value. NF_EINVAL (cfg unchanged) on a NULL
   cfg, key or pointer argument, a key already set, a non-finite real (JSON cannot
   hold one), a size beyond the JSON integer range; NF_ENOMEM. */

/* Sets key to the integer v. */
nf_status nf_config_set_int(nf_config *cfg, const char *key, long long v);
/* Sets key to the finite real v (written with 17 significant digits: read back bit for bit). */
nf_status nf_config_set_real(nf_config *cfg, const char *key, double v);
/* Sets key to a copy of the UTF-8 string v. */
nf_status nf_config_set_string(nf_config *cfg, const char *key, const char *v);
/* Sets key to a list of n sizes (n may be 0; v may then be NULL). */
nf_status nf_config_set_sizes(nf_config *cfg, const char *key, size_t n, const size_t *v);
/* Sets key to n >= 1 finite float64 values stored as a tensor of the model file, not in its
   JSON (preprocessing constants such as a standardisation's shift and scale). */
nf_status nf_config_set_tensor(nf_config *cfg, const char *key, size_t n, const double *v);

/* Readers: NF_EINVAL on a NULL argument; NF_EFORMAT with "config key 'key': what"
   if the key is missing or holds another type; outputs untouched on failure. */

/* *v = the integer of key. */
nf_status nf_config_get_int(const nf_config *cfg, const char *key, long long *v);
/* *v = the number of key (a JSON integer is accepted too). */
nf_status nf_config_get_real(const nf_config *cfg, const char *key, double *v);
/* *v = the string of key (valid while cfg lives). */
nf_status nf_config_get_string(const nf_config *cfg, const char *key, const char **v);
/* *v = the integer of key, which must be >= 0 and fit a size_t. */
nf_status nf_config_get_size(const nf_config *cfg, const char *key, size_t *v);
/* *n = the length of key's list or tensor. */
nf_status nf_config_get_len(const nf_config *cfg, const char *key, size_t *n);
/* v[0..n) = key's list, which must hold exactly n non-negative integers. */
nf_status nf_config_get_sizes(const nf_config *cfg, const char *key, size_t n, size_t *v);
/* v[0..n) = key's tensor, which must hold exactly n values. */
nf_status nf_config_get_tensor(const nf_config *cfg, const char *key, size_t n, double *v);

/* 1 if key is set (as any type, tensors included), else 0 (also for NULL arguments). */
int nf_config_has(const nf_config *cfg, const char *key);

#ifdef __cplusplus
}
#endif
#endif
