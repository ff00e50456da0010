noinst_PROGRAMS += examples/density
examples_density_SOURCES = examples/density.c
examples_density_LDADD = libnflow.la -lm
