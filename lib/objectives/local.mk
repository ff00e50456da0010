# Objectives beyond maximum likelihood: targets, sample-based objectives, importance weights.
nflowinclude_HEADERS += include/nflow/target.h include/nflow/objective.h include/nflow/importance.h
libnflow_la_SOURCES += lib/objectives/target.c lib/objectives/objective.c lib/objectives/importance.c
