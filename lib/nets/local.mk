# Networks over explicit parameter slices: the MLP and the CNF dynamics.
nflowinclude_HEADERS += include/nflow/mlp.h include/nflow/odenet.h include/nflow/made.h
libnflow_la_SOURCES += lib/nets/mlp.c lib/nets/mlp_pass.h lib/nets/odenet.c lib/nets/odenet_pass.h \
  lib/nets/made.c
