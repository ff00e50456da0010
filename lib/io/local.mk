# Data in and out: data sets, toy sets, CSV and .npy.
nflowinclude_HEADERS += include/nflow/dataset.h
libnflow_la_SOURCES += lib/io/dataset.c lib/io/toy_data.c lib/io/csv.c lib/io/npy.c
