# Elementwise monotone transformers behind the coupling and autoregressive conditioners.
noinst_HEADERS += lib/transformers/transformer.h
libnflow_la_SOURCES += lib/transformers/additive.c lib/transformers/affine.c
