# Discrete bijectors, one family a file, and the recipes that chain them.
nflowinclude_HEADERS += include/nflow/affine.h include/nflow/permute.h \
  include/nflow/linear_lu.h include/nflow/planar.h include/nflow/radial.h \
  include/nflow/coupling.h include/nflow/recipes.h include/nflow/preprocess.h \
  include/nflow/residual.h include/nflow/autoregressive.h include/nflow/inverse.h \
  include/nflow/actnorm.h include/nflow/gaussianization.h
noinst_HEADERS += lib/bijectors/affine_ops.h
libnflow_la_SOURCES += lib/bijectors/affine.c lib/bijectors/permute.c \
  lib/bijectors/linear_lu.c lib/bijectors/planar.c lib/bijectors/radial.c \
  lib/bijectors/coupling.c lib/bijectors/recipes.c \
  lib/bijectors/preprocess.c lib/bijectors/residual.c lib/bijectors/residual_net.c \
  lib/bijectors/residual_logdet.c lib/bijectors/residual_internal.h \
  lib/bijectors/autoregressive.c lib/bijectors/inverse.c \
  lib/bijectors/actnorm.c lib/bijectors/gaussianization.c
