# Elementwise monotone transformers behind the coupling and autoregressive conditioners.
noinst_HEADERS += lib/transformers/transformer.h lib/transformers/rq_bins.h
libnflow_la_SOURCES += lib/transformers/kinds.c lib/transformers/additive.c lib/transformers/affine.c \
  lib/transformers/rq_bins.c lib/transformers/rq_spline.c lib/transformers/circular_spline.c
nflowinclude_HEADERS += include/nflow/transformer.h
