noinst_PROGRAMS += bench/bench_realnvp
bench_bench_realnvp_SOURCES = bench/bench_realnvp.c
bench_bench_realnvp_LDADD = libnflow.la $(BLAS_LIBS) -lm
