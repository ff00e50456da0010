# libnflow-mpi: an nf_comm over MPI (nflow/mpi.h, nflow-mpi.pc), built only
# when configure finds MPI; the core libnflow does not depend on it.
if HAVE_MPI
lib_LTLIBRARIES += libnflow-mpi.la
nflowinclude_HEADERS += include/nflow/mpi.h
libnflow_mpi_la_SOURCES = lib/mpi/mpi.c
libnflow_mpi_la_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
libnflow_mpi_la_LIBADD = libnflow.la $(MPI_LIBS)
libnflow_mpi_la_LDFLAGS = -version-info 0:0:0 -no-undefined
pkgconfig_DATA += nflow-mpi.pc
else
EXTRA_DIST += include/nflow/mpi.h lib/mpi/mpi.c
endif
