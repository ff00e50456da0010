# libnflow-plot: pictures with cairo (nflow/plot.h, nflow-plot.pc), built only
# when configure finds cairo; the core libnflow does not depend on it.
if HAVE_CAIRO
lib_LTLIBRARIES += libnflow-plot.la
nflowinclude_HEADERS += include/nflow/plot.h
libnflow_plot_la_SOURCES = lib/plot/plot.c
libnflow_plot_la_CFLAGS = $(AM_CFLAGS) $(CAIRO_CFLAGS)
libnflow_plot_la_LIBADD = libnflow.la $(CAIRO_LIBS) -lm
libnflow_plot_la_LDFLAGS = -version-info 0:0:0 -no-undefined
pkgconfig_DATA += nflow-plot.pc
else
EXTRA_DIST += include/nflow/plot.h lib/plot/plot.c
endif
