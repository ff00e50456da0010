/* lib/transformers/circular_spline.c — the circular rational-quadratic spline
   transformer (Rezende et al. 2020, "Normalizing flows on tori and spheres"):
   a monotone spline of K bins mapping [-pi, pi] onto itself with -pi -> -pi,
   pi -> pi and the derivative at -pi equal to the one at pi, so that it is a
   diffeomorphism of the circle. Raw values per coordinate, 3K: K width
   logits, K height logits, K knot derivative raws (knot K shares knot 0's).
   Inputs outside [-pi, pi] are refused (NF_EDOMAIN). Options: bins and the
   three minima (tail_bound is not read). The ops are rq_bins.c's, shared
   with the interval spline and told apart by the options' kind
   (NF_TRANSFORMER_CIRCULAR_SPLINE). */
#include "rq_bins.h"
#include "transformer.h"

const nf_transformer nf_transformer_circular_spline = {.name = "circular-spline", RQ_SPLINE_OPS};
