lib_LTLIBRARIES += libnflow.la
nflowincludedir = $(includedir)/nflow
include_HEADERS = include/nflow.h
nflowinclude_HEADERS = \
  include/nflow/status.h include/nflow/rng.h include/nflow/layer.h \
  include/nflow/mlp.h include/nflow/flow.h include/nflow/affine.h \
  include/nflow/permute.h include/nflow/linear_lu.h include/nflow/planar.h \
  include/nflow/radial.h include/nflow/coupling.h include/nflow/adam.h \
  include/nflow/dataset.h include/nflow/trainer.h include/nflow/recipes.h \
  include/nflow/odenet.h include/nflow/cnf.h include/nflow/field.h \
  include/nflow/meta.h include/nflow/config.h
noinst_HEADERS += lib/internal.h lib/io/io_internal.h lib/io/safetensors.h
libnflow_la_SOURCES = \
  lib/status.c lib/rng.c lib/layer.c lib/flow.c lib/mlp.c \
  lib/affine.c lib/permute.c lib/linear_lu.c lib/planar.c lib/radial.c \
  lib/coupling.c lib/adam.c lib/trainer.c lib/dataset.c lib/toy_data.c lib/csv.c lib/npy.c lib/recipes.c \
  lib/odenet.c lib/cnf.c \
  lib/io/crc32.c lib/io/le64.c lib/io/atomic_file.c lib/io/meta.c lib/io/config.c \
  lib/io/safetensors.c lib/io/dataset_write.c
libnflow_la_LIBADD = $(SUNDIALS_LIBS) $(BLAS_LIBS) $(JANSSON_LIBS) -lm
libnflow_la_LDFLAGS = -version-info 0:0:0 -no-undefined
