# Data in and out: data sets, toy sets, CSV and .npy; model-file containers
# (safetensors, CRC-32, atomic replacement) and the nf_meta / nf_config maps.
nflowinclude_HEADERS += include/nflow/dataset.h include/nflow/meta.h include/nflow/config.h
noinst_HEADERS += lib/io/io_internal.h lib/io/safetensors.h
libnflow_la_SOURCES += lib/io/dataset.c lib/io/toy_data.c lib/io/csv.c lib/io/npy.c \
  lib/io/crc32.c lib/io/le64.c lib/io/atomic_file.c lib/io/meta.c lib/io/config.c \
  lib/io/safetensors.c lib/io/dataset_write.c lib/io/input_file.c
# Model files: a flow as a safetensors file.
nflowinclude_HEADERS += include/nflow/model.h
libnflow_la_SOURCES += lib/io/model.c
