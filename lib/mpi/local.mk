# libnflow-mpi: an nf_comm over MPI (nflow/mpi.h, nflow-mpi.pc), built only
# when configure finds MPI; the core libnflow does not depend on it. The tool
# links its code directly, as it does libnflow-plot's (lib/plot/local.mk).
if HAVE_MPI
lib_LTLIBRARIES += libnflow-mpi.la
noinst_LTLIBRARIES += libnflow-mpi-code.la
nflowinclude_HEADERS += include/nflow/mpi.h
libnflow_mpi_code_la_SOURCES = lib/mpi/mpi.c
libnflow_mpi_code_la_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
libnflow_mpi_la_SOURCES =
libnflow_mpi_la_LIBADD = libnflow-mpi-code.la libnflow.la $(MPI_LIBS)
libnflow_mpi_la_LDFLAGS = -version-info 0:0:0 -no-undefined
pkgconfig_DATA += nflow-mpi.pc
else
EXTRA_DIST += include/nflow/mpi.h lib/mpi/mpi.c
endif
