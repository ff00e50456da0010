# The library: one folder a concept, each listing its own sources.
lib_LTLIBRARIES += libnflow.la
nflowincludedir = $(includedir)/nflow
include_HEADERS = include/nflow.h
nflowinclude_HEADERS =
libnflow_la_SOURCES =
libnflow_la_LIBADD = $(SUNDIALS_LIBS) $(BLAS_LIBS) $(JANSSON_LIBS) -lm -lpthread
# libtool -version-info current:revision:age; 1:0:0 is the v1 interface (an ABI break from 0.1).
libnflow_la_LDFLAGS = -version-info 1:0:0 -no-undefined

include lib/core/local.mk
include lib/nets/local.mk
include lib/bijectors/local.mk
include lib/transformers/local.mk
include lib/cnf/local.mk
include lib/objectives/local.mk
include lib/train/local.mk
include lib/io/local.mk
