# Data in and out: data sets, toy sets, CSV and .npy.
nflowinclude_HEADERS += include/nflow/dataset.h
libnflow_la_SOURCES += lib/io/dataset.c lib/io/toy_data.c lib/io/csv.c lib/io/npy.c
# Model files: CRC-32, atomic replacement, string maps, family configurations
# and the safetensors container.
nflowinclude_HEADERS += include/nflow/meta.h include/nflow/config.h
noinst_HEADERS += lib/io/io_internal.h lib/io/safetensors.h
libnflow_la_SOURCES += lib/io/crc32.c lib/io/le64.c lib/io/atomic_file.c lib/io/meta.c \
  lib/io/config.c lib/io/safetensors.c lib/io/dataset_write.c
nflowinclude_HEADERS += include/nflow/model.h
libnflow_la_SOURCES += lib/io/model.c
