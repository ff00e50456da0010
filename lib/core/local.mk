# Core: status, rng, the layer interface, flows and their workspaces.
nflowinclude_HEADERS += include/nflow/status.h include/nflow/rng.h include/nflow/layer.h \
  include/nflow/layer_impl.h include/nflow/flow.h include/nflow/version.h \
  include/nflow/limits.h include/nflow/precision.h include/nflow/comm.h include/nflow/pool.h
noinst_HEADERS += lib/core/internal.h lib/core/normal.h
libnflow_la_SOURCES += lib/core/status.c lib/core/rng.c lib/core/layer.c lib/core/flow.c lib/core/limits.c \
  lib/core/flow_init.c lib/core/normal.c lib/core/precision.c lib/core/comm.c lib/core/pool.c
