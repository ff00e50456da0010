# Continuous normalizing flows: the CNF layer and user vector fields.
nflowinclude_HEADERS += include/nflow/cnf.h include/nflow/field.h
libnflow_la_SOURCES += lib/cnf/cnf.c
