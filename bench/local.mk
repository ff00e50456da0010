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
