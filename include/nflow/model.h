/* nflow/model.h — model files: a trained flow kept on disk.

   A model file uses the published safetensors layout (an 8-byte little-endian
   header length, a JSON header, then raw little-endian float64 tensors), so
   numpy or the safetensors package read its parameters. Its "__metadata__"
   holds the format name and version, the architecture as a JSON string (every
   layer's family and configuration), the provenance the caller passes, and a
   CRC-32 over all of these and the data. Tensors: "base" (the base
   distribution's parameters, if any), "layers.K" (layer K's theta slice) and
   "layers.K.NAME" (a layer's configuration constants, e.g. a standardisation's
   shift and scale, which are not parameters).

   Writing is atomic (a temporary file in the same folder, fsync, rename).
   Loading checks everything and builds nothing half-way. */
#ifndef NFLOW_MODEL_H
#define NFLOW_MODEL_H

#include "nflow/status.h"
#include "nflow/flow.h"
#include "nflow/field.h"
#include "nflow/meta.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "nflow-model" and the format version this library writes and reads. */
#define NF_MODEL_FORMAT "nflow-model"
#define NF_MODEL_VERSION 1

/* What a loader asks the caller for: the callbacks of user vector fields,
   saved by name (nf_field.name). */
typedef struct nf_resolver {
  /* Fills *field (all but its name) for the field saved as name; 0 on
     success, nonzero if unknown. */
  int (*field)(const char *name, nf_field *field, void *user);
  void *user;
} nf_resolver;

/* Saves flow (architecture, theta, configuration constants) and meta (may be
   NULL: string pairs such as "data", "iterations", "test_nll") to path,
   atomically. The format owns the keys "format", "format_version",
   "nflow_version", "architecture", "preprocessing" and "crc32": NF_EINVAL if
   meta uses one. NF_EINVAL on a layer whose family cannot be saved (named),
   NF_EIO naming the path on a write failure (an existing file is then left
   as it was). */
nf_status nf_flow_save(const nf_flow *flow, const char *path, const nf_meta *meta);

/* Loads a flow saved by nf_flow_save; resolver may be NULL when the file
   holds no user vector field. *meta (if meta != NULL) receives the caller's
   saved metadata, without the format's own keys (free it with nf_meta_free). On failure nothing is returned:
   NF_EIO (cannot open or read), NF_EFORMAT (not a model file, truncated,
   corrupted: checksum mismatch, malformed architecture, another format
   version, an unknown family, a parameter count that does not match),
   NF_ENONFINITE or NF_EDOMAIN (theta refused, naming the layer), each with
   the path in the message. */
nf_status nf_flow_load(const char *path, const nf_resolver *resolver, nf_flow **flow,
                       nf_meta **meta);

#ifdef __cplusplus
}
#endif
#endif
