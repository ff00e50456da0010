# Benchmark programs (not tests): each prints its figures and the dgemm rate
# measured in the same run.
noinst_PROGRAMS += bench/bench_realnvp bench/bench_cnf bench/bench_autoregressive
noinst_HEADERS += bench/timing.h
bench_bench_realnvp_SOURCES = bench/bench_realnvp.c bench/timing.c
bench_bench_realnvp_LDADD = libnflow.la $(BLAS_LIBS) -lm
bench_bench_cnf_SOURCES = bench/bench_cnf.c bench/timing.c
bench_bench_cnf_LDADD = libnflow.la $(BLAS_LIBS) -lm
bench_bench_autoregressive_SOURCES = bench/bench_autoregressive.c bench/timing.c
bench_bench_autoregressive_LDADD = libnflow.la $(BLAS_LIBS) -lm
# 1 against 2 worker threads (nflow/pool.h).
noinst_PROGRAMS += bench/bench_threads
bench_bench_threads_SOURCES = bench/bench_threads.c bench/timing.c
bench_bench_threads_LDADD = libnflow.la $(BLAS_LIBS) -lm
# The 16-D tabular set of bench/tabular/README.md.
noinst_PROGRAMS += bench/tabular/make_data
bench_tabular_make_data_SOURCES = bench/tabular/make_data.c
bench_tabular_make_data_LDADD = libnflow.la -lm
EXTRA_DIST += bench/tabular/README.md bench/tabular/run.sh bench/tabular/zuko_tabular.py \
  bench/peers/zuko_shapes.py bench/peers/zuko_throughput.py
# Flow against Markov chain on phi^4; shares the chain and flow of tests/test_phi4.
noinst_PROGRAMS += bench/bench_phi4
bench_bench_phi4_SOURCES = bench/bench_phi4.c bench/timing.c tests/phi4_mcmc.c tests/phi4_flow.c
bench_bench_phi4_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests
bench_bench_phi4_LDADD = libnflow.la $(BLAS_LIBS) -lm
# The all-reduce and step times of the data-parallel scaling model (MPI builds only).
if HAVE_MPI
noinst_PROGRAMS += bench/bench_allreduce
bench_bench_allreduce_SOURCES = bench/bench_allreduce.c bench/timing.c
bench_bench_allreduce_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
bench_bench_allreduce_LDADD = libnflow-mpi.la libnflow.la $(BLAS_LIBS) $(MPI_LIBS) -lm
else
EXTRA_DIST += bench/bench_allreduce.c
endif
