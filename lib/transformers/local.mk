# Elementwise monotone transformers behind the coupling and autoregressive conditioners.
noinst_HEADERS += lib/transformers/transformer.h
libnflow_la_SOURCES += lib/transformers/kinds.c lib/transformers/additive.c lib/transformers/affine.c
nflowinclude_HEADERS += include/nflow/transformer.h
