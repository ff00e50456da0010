noinst_PROGRAMS += bench/bench_realnvp
bench_bench_realnvp_SOURCES = bench/bench_realnvp.c
bench_bench_realnvp_LDADD = libnflow.la $(BLAS_LIBS) -lm
noinst_PROGRAMS += bench/bench_cnf
bench_bench_cnf_SOURCES = bench/bench_cnf.c
bench_bench_cnf_LDADD = libnflow.la $(BLAS_LIBS) -lm
