# libnflow-plot: pictures with cairo (nflow/plot.h, nflow-plot.pc), built only
# when configure finds cairo; the core libnflow does not depend on it. Its code
# is a convenience library the tool and the tests link in directly: `make
# install` relinks libnflow-plot.so in .libs (it depends on uninstalled
# libnflow), which must not race with a test loading it.
if HAVE_CAIRO
lib_LTLIBRARIES += libnflow-plot.la
noinst_LTLIBRARIES += libnflow-plot-code.la
nflowinclude_HEADERS += include/nflow/plot.h
libnflow_plot_code_la_SOURCES = lib/plot/plot.c
libnflow_plot_code_la_CFLAGS = $(AM_CFLAGS) $(CAIRO_CFLAGS)
libnflow_plot_la_SOURCES =
libnflow_plot_la_LIBADD = libnflow-plot-code.la libnflow.la $(CAIRO_LIBS) -lm
libnflow_plot_la_LDFLAGS = -version-info 0:0:0 -no-undefined
pkgconfig_DATA += nflow-plot.pc
else
EXTRA_DIST += include/nflow/plot.h lib/plot/plot.c
endif
