/* tests/fuzz/fuzz_npy.c — libFuzzer target: nf_dataset_read_npy on any bytes. */
#include "fuzz_common.h"

/* One input: read it as .npy, check the answer, free. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static nf_dataset untouched;
  const char *path = fuzz_file(data, size);
  nf_dataset *ds = &untouched;
  fuzz_check_dataset(nf_dataset_read_npy(path, &ds), path, ds, &untouched);
  return 0;
}
