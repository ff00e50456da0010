/* lib/transformers/rq_spline.c — the rational-quadratic spline transformer
   (Durkan et al. 2019, "Neural Spline Flows"): K monotone rational-quadratic
   bins on [-B, B], identity tails (slope 1, log-det 0) outside. Raw values
   per coordinate, 3K - 1: K width logits, K height logits, K - 1 interior
   derivative raws; the end derivatives are 1 to match the tails. Options:
   bins, tail_bound, min_bin_width, min_bin_height, min_derivative (saved
   under those keys). The ops are rq_bins.c's, shared with the circular
   spline and told apart by the options' kind (NF_TRANSFORMER_SPLINE). */
#include "rq_bins.h"
#include "transformer.h"

const nf_transformer nf_transformer_spline = {.name = "spline", RQ_SPLINE_OPS};
