# Check suites, one per module (tests/test_X.c, default sources); the shared
# numerical checks (finite differences, brute-force log-det, round trips,
# grid mass) live in tests/helpers.c.
check_LTLIBRARIES = tests/libhelpers.la
tests_libhelpers_la_SOURCES = tests/helpers.c tests/helpers.h
# Threads: th_check_threads runs two on one flow. The helpers compile with
# -pthread; the suites link -lpthread (automake keeps -pthread for *_LDFLAGS,
# which every suite would then need its own copy of).
tests_libhelpers_la_CFLAGS = $(AM_CFLAGS) -pthread
LDADD = tests/libhelpers.la libnflow.la $(CHECK_LIBS) $(BLAS_LIBS) -lm -lpthread

nf_suites = \
  tests/test_rng tests/test_flow tests/test_mlp tests/test_affine \
  tests/test_permute tests/test_linear_lu tests/test_planar tests/test_radial \
  tests/test_coupling tests/test_adam tests/test_trainer tests/test_dataset \
  tests/test_ode tests/test_odenet tests/test_odenet_single tests/test_cnf tests/test_recipes tests/test_npy tests/test_io \
  tests/test_preprocess tests/test_model tests/test_bad_input tests/test_residual \
  tests/test_made tests/test_autoregressive tests/test_actnorm tests/test_gaussianization \
  tests/test_spline tests/test_phi4 tests/test_objective tests/test_map tests/test_single \
  tests/test_comm tests/test_threads
check_PROGRAMS += $(nf_suites)
# test_ode reaches the internal nf_ode_replay, hidden from the shared library,
# and counts the library's allocations by wrapping malloc, calloc and realloc.
tests_test_ode_LDFLAGS = -static -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
# test_cnf reaches the internal nf_config_new/_json/_from_json (save -> load).
tests_test_cnf_LDFLAGS = -static
# test_coupling reaches the internal transformers and nf_config_new.
tests_test_coupling_LDFLAGS = -static
# test_autoregressive reaches nf_config_new (save -> load through the registry).
tests_test_autoregressive_LDFLAGS = -static
# test_single reaches nf_config_new (the layers' saved precision).
tests_test_single_LDFLAGS = -static
# test_spline reaches the internal transformers and nf_config_new.
tests_test_spline_LDFLAGS = -static
# test_io reaches the internal CRC, atomic writer, config and safetensors code.
tests_test_io_LDFLAGS = -static
# test_model writes damaged files through the internal safetensors writer.
tests_test_model_LDFLAGS = -static
# test_gaussianization checks the internal log-space normal CDF and its inverse.
tests_test_gaussianization_LDFLAGS = -static
# test_bad_input builds layers of an internal type through nf_layer_create.
tests_test_bad_input_LDFLAGS = -static
# test_phi4 shares its Markov chain and flow with bench/bench_phi4.
tests_test_phi4_SOURCES = tests/test_phi4.c tests/phi4_mcmc.c tests/phi4_mcmc.h \
  tests/phi4_flow.c tests/phi4_flow.h
# io_fixtures writes the files test_io_python.sh reads with NumPy.
check_PROGRAMS += tests/io_fixtures
tests_io_fixtures_LDFLAGS = -static
TESTS += $(nf_suites) tests/test_cli.sh tests/test_cli_target.sh tests/test_install.sh tests/test_io_python.sh \
  tests/test_man.sh tests/test_doc.sh
EXTRA_DIST += tests/test_cli.sh tests/test_cli_target.sh tests/test_install.sh tests/data tests/read_safetensors.py \
  tests/test_io_python.sh tests/valgrind_suites tests/numpy_python.sh tests/test_man.sh tests/test_doc.sh
AM_TESTS_ENVIRONMENT = top_srcdir='$(abs_top_srcdir)'; top_builddir='$(abs_top_builddir)'; \
  nf_sanitizers='$(enable_sanitizers)'; export top_srcdir top_builddir nf_sanitizers;
# libnflow-plot (cairo): pictures read back and checked on their pixels;
# without cairo the suite is a skip (77).
if HAVE_CAIRO
check_PROGRAMS += tests/test_plot tests/plot_probe
tests_test_plot_SOURCES = tests/test_plot.c tests/plot_helpers.c tests/plot_helpers.h
tests_test_plot_CFLAGS = $(AM_CFLAGS) $(CAIRO_CFLAGS)
tests_test_plot_LDADD = libnflow-plot-code.la $(LDADD) $(CAIRO_LIBS)
tests_plot_probe_SOURCES = tests/plot_probe.c tests/plot_helpers.c tests/plot_helpers.h
tests_plot_probe_CFLAGS = $(AM_CFLAGS) $(CAIRO_CFLAGS)
tests_plot_probe_LDADD = libnflow-plot-code.la libnflow.la $(CAIRO_LIBS) -lm
TESTS += tests/test_plot
endif
TESTS += tests/test_cli_plot.sh
EXTRA_DIST += tests/lsan.supp tests/test_cli_plot.sh tests/test_plot.c tests/plot_helpers.c tests/plot_helpers.h \
  tests/plot_probe.c
# Data-parallel training under mpirun (skipped without MPI); theta_compare
# compares the parameters of two saved models.
check_PROGRAMS += tests/theta_compare
TESTS += tests/test_mpi.sh
EXTRA_DIST += tests/test_mpi.sh
