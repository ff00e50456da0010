/* nflow/layer_impl.h — for people writing a layer family: the ops table, the
   layer record, and registration for model files.

   Like a SUNDIALS ops table, nf_layer_type holds the operations of one family
   and nf_layer one instance. The library's own families are written against
   exactly this header. */
#ifndef NFLOW_LAYER_IMPL_H
#define NFLOW_LAYER_IMPL_H

#include <stddef.h>
#include "nflow/layer.h"
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_config nf_config;     /* a family's saved configuration: nflow/config.h */
typedef struct nf_resolver nf_resolver; /* the loader's user callbacks: nflow/model.h */

/* Operations of one family. Contracts, for every implementation:
   - theta: the layer's n_params parameters, already checked (check_params);
     in, out: n x d, never aliased; ctx: n x c, or NULL when c == 0.
   - apply writes out and ADDS to logdet[0..n) (NULL: not wanted). It may leave
     a record in work (work_size(n) doubles) for vjp. opts is never NULL.
   - vjp is the vector-Jacobian product of in -> (out, logdet): it WRITES g_in
     (NULL: not wanted), ADDS into g_ctx (NULL: not wanted) and ADDS into
     g_theta (NULL: not wanted), reading the record apply left in work.
   - Neither writes to the layer: all per-call state lives in work. */
typedef struct nf_layer_type {
  const char *name; /* unique; the key of model files */
  size_t (*work_size)(const nf_layer *layer, size_t n); /* NULL: none */
  nf_status (*apply)(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                     const double *in, const double *ctx, double *out, double *logdet,
                     const nf_apply_opts *opts, double *work);
  nf_status (*vjp)(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                   const double *in, const double *ctx, const double *out,
                   const double *g_out, const double *g_logdet, double *g_in, double *g_ctx,
                   double *g_theta, double *work);
  void (*destroy)(void *data); /* frees the family's private data; may be NULL */
  /* Optional (NULL for most families): */
  /* Frees what apply keeps in a workspace beyond plain doubles (a solver);
     whoever frees a workspace calls it first. Such a layer finds its workspace
     zeroed when first used, and never shares it with another layer. */
  void (*work_release)(const nf_layer *layer, size_t n, double *work);
  /* Regularisation penalty of the last apply with this workspace, averaged
     over its n rows (RNODE's terms); vjp adds opts->penalty_weight times the
     gradient of that average (the weight apply was given). */
  double (*penalty)(const nf_layer *layer, size_t n, const double *work);
  /* Family-specific check of finite theta: NF_EDOMAIN (with a message naming
     the parameter) for values that make the map singular or overflow. */
  nf_status (*check_params)(const nf_layer *layer, const double *theta);
  /* Writes the configuration the loader needs to rebuild the layer (dims are
     saved by the caller; theta is saved apart). */
  nf_status (*save)(const nf_layer *layer, nf_config *cfg);
  /* Rebuilds a layer of this family from its saved configuration (with zero
     parameters: theta is loaded apart). NULL with nf_errmsg on failure. */
  nf_layer *(*load)(size_t dim, size_t ctx_dim, const nf_config *cfg, const nf_resolver *res);
  /* Optional: data-dependent initialisation (Glow's actnorm). Writes the
     layer's theta (n_params doubles, holding its current values on entry)
     from the n rows `in` (n x d, finite) that enter the layer in the
     NF_INVERSE direction and their contexts ctx (NULL when c == 0), so that
     its output towards z is normalised. theta is then checked by the caller
     (nf_flow_init_from_data) before anything is written to a flow. */
  nf_status (*init_from_data)(const nf_layer *layer, double *theta, size_t n, const double *in,
                              const double *ctx);
  /* Optional: nonzero when a row's result depends on the other rows of the
     batch (a CNF whose adaptive solver picks steps for the whole batch). A
     threaded flow workspace (nf_flow_ws_new_threads) then does not split the
     flow's batch across threads; every layer receives the workspace's pool
     through nf_apply_opts.pool instead (the inverse wrapper counts as its
     inner layer). 0 (the default): rows independent. */
  int couples_rows;
} nf_layer_type;

/* One layer instance: immutable once constructed. */
struct nf_layer {
  const nf_layer_type *type;
  size_t dim;      /* d */
  size_t ctx_dim;  /* c: width of the conditioning input, 0 if none */
  size_t n_params;
  double *init;    /* n_params initial parameters, written by the constructor only */
  void *data;      /* family-specific, owned */
  int in_flow;     /* set once when a flow takes ownership, before any sharing */
};

/* A layer of `type` with zeroed initial parameters; takes ownership of data
   (destroyed on failure too). NULL (with nf_errmsg) on a NULL type or one
   without apply, dim == 0, or no memory. */
nf_layer *nf_layer_create(const nf_layer_type *type, size_t dim, size_t ctx_dim,
                          size_t n_params, void *data);

/* Records a printf-style message for nf_errmsg() and status for
   nf_last_status(), and returns status: how a family reports failure. */
nf_status nf_set_error(nf_status status, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 2, 3)))
#endif
  ;

/* Makes a family loadable from model files by its type name (needs save and
   load). Thread-safe; call before loading. NF_EINVAL on a type without a
   name, save or load, or a name already registered for another type. The
   library's own families are registered already. */
nf_status nf_layer_register(const nf_layer_type *type);

/* The registered family of that name, or NULL. */
const nf_layer_type *nf_layer_type_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif
