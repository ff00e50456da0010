bin_PROGRAMS += tools/nflow
tools_nflow_SOURCES = tools/nflow.c
tools_nflow_LDADD = libnflow.la $(BLAS_LIBS) -lm
