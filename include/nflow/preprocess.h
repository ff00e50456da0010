/* nflow/preprocess.h — preprocessing as fixed bijections: layers without
   parameters (n_params 0) whose constants are configuration, saved in model
   files as tensors ("layers.K.shift", ...) and never seen by an optimizer.

   In sampling order they come LAST (closest to x): append them after the
   learned layers, so that the flow's log p(x) is a density in the caller's
   units (the log-dets of the preprocessing included):
     nf_flow_push(flow, ...learned layers...);
     nf_flow_push(flow, nf_standardize_new(d, shift, scale));   x = shift + scale * y
   Both families have vjp in both directions. */
#ifndef NFLOW_PREPROCESS_H
#define NFLOW_PREPROCESS_H

#include <stddef.h>
#include "nflow/layer.h"
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Standardisation, family "standardize": forward x = shift + scale * z,
   inverse z = (x - shift) / scale, log-det +-sum_j log scale_j. shift and
   scale (dim values each, copied) must be finite, scale > 0. NULL (with
   nf_errmsg naming the first bad entry) otherwise, on dim == 0 or no memory. */
nf_layer *nf_standardize_new(size_t dim, const double *shift, const double *scale);

/* The column means (shift) and standard deviations (scale, population: divided
   by n) of n >= 1 training rows x (n x dim), by two passes. A constant column
   (or one whose spread underflows) gets scale 1, silently: standardising it
   then only centres it. NF_EINVAL on NULL arrays, n == 0 or dim == 0;
   NF_ENONFINITE naming the row and column of a NaN or Inf (0-based); outputs
   untouched on failure. */
nf_status nf_standardize_fit(size_t n, size_t dim, const double *x, double *shift,
                             double *scale);

/* Logit transform for data on boxes [lo_j, hi_j], family "logit" (RealNVP's
   preprocessing of bounded data):
     inverse (x -> z): u = alpha + (1 - 2 alpha)(x - lo)/(hi - lo),
                       z = logit(u) = log u - log1p(-u)
     forward (z -> x): u = sigmoid(z), x = lo + (u - alpha)(hi - lo)/(1 - 2 alpha)
   The log-dets are exact in log space: forward sum_j log sigmoid(z_j) +
   log sigmoid(-z_j) - log c_j, c_j = (1 - 2 alpha)/(hi_j - lo_j), the
   log-sigmoids as -softplus(-+z) (stable far into the tails; 1 - u is formed
   from hi - x, never by cancellation).
   The inverse's domain is the forward map's whole image, the open interval
     (lo - alpha (hi - lo)/(1 - 2 alpha), hi + alpha (hi - lo)/(1 - 2 alpha))
   per column, which is (lo, hi) when alpha = 0: on it the density is
   normalised (it integrates to 1 over the image, not over [lo, hi]), and
   every sample the forward map returns has a density (in the far tails,
   |z| > ~37, x is moved inwards by the few ulps it takes). Outside it the
   inverse refuses with NF_EDOMAIN naming the row (counted from the caller's
   first row) and column, out and logdet untouched. Checking that data lie in
   [lo, hi] is the caller's business (nflow train --bounds does).
   lo, hi: dim finite values each (copied) with lo < hi and hi - lo finite;
   alpha in [0, 0.5). NULL (with nf_errmsg) otherwise, on dim == 0 or no memory. */
nf_layer *nf_logit_new(size_t dim, const double *lo, const double *hi, double alpha);

#ifdef __cplusplus
}
#endif
#endif
