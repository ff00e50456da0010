# libFuzzer targets, one per reader (CSV, .npy, model files), with seed
# corpora in tests/fuzz/corpus_*. They are built only by clang, in a build of
# their own: `make fuzz` (or scripts/fuzz.sh [SECONDS]) configures build-fuzz/
# in the source tree with CC=clang and -fsanitize=fuzzer-no-link,address,
# undefined, builds the targets there and runs each for FUZZ_SECONDS (default
# 300). Never part of `make` or `make check`.
EXTRA_PROGRAMS = tests/fuzz/fuzz_csv tests/fuzz/fuzz_npy tests/fuzz/fuzz_model
nf_fuzz_ldadd = libnflow.la -lm
nf_fuzz_ldflags = -fsanitize=fuzzer
tests_fuzz_fuzz_csv_SOURCES = tests/fuzz/fuzz_csv.c tests/fuzz/fuzz_common.h
tests_fuzz_fuzz_csv_LDADD = $(nf_fuzz_ldadd)
tests_fuzz_fuzz_csv_LDFLAGS = $(nf_fuzz_ldflags)
tests_fuzz_fuzz_npy_SOURCES = tests/fuzz/fuzz_npy.c tests/fuzz/fuzz_common.h
tests_fuzz_fuzz_npy_LDADD = $(nf_fuzz_ldadd)
tests_fuzz_fuzz_npy_LDFLAGS = $(nf_fuzz_ldflags)
tests_fuzz_fuzz_model_SOURCES = tests/fuzz/fuzz_model.c tests/fuzz/fuzz_common.h
tests_fuzz_fuzz_model_LDADD = $(nf_fuzz_ldadd)
tests_fuzz_fuzz_model_LDFLAGS = $(nf_fuzz_ldflags)
EXTRA_DIST += scripts/fuzz.sh tests/fuzz/corpus_csv tests/fuzz/corpus_npy tests/fuzz/corpus_model
FUZZ_SECONDS = 300

# Builds the targets with clang in build-fuzz/ of the source tree (shared with
# scripts/fuzz.sh) and runs each FUZZ_SECONDS (make fuzz FUZZ_SECONDS=60).
fuzz:
	$(SHELL) '$(abs_top_srcdir)/scripts/fuzz.sh' '$(FUZZ_SECONDS)'
.PHONY: fuzz
