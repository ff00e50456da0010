# Training: the optimizer and the minibatch loop.
nflowinclude_HEADERS += include/nflow/adam.h include/nflow/trainer.h include/nflow/map.h
libnflow_la_SOURCES += lib/train/adam.c lib/train/trainer.c lib/train/map.c
