bin_PROGRAMS += tools/nflow
tools_nflow_SOURCES = tools/nflow.c tools/targets.c tools/targets.h
tools_nflow_LDADD = libnflow.la $(BLAS_LIBS) $(DL_LIBS) -lm
if HAVE_CAIRO
tools_nflow_LDADD += libnflow-plot-code.la $(CAIRO_LIBS)
endif
if HAVE_MPI
tools_nflow_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
tools_nflow_LDADD += libnflow-mpi-code.la $(MPI_LIBS)
endif
