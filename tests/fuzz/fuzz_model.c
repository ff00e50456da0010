/* tests/fuzz/fuzz_model.c — libFuzzer target: nf_flow_load on any bytes. */
#include "fuzz_common.h"

/* One input: load it as a model file, check the answer, free. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *path = fuzz_file(data, size);
  nf_flow *flow = NULL;
  nf_meta *meta = NULL;
  nf_status st = nf_flow_load(path, NULL, &flow, &meta);
  fuzz_check_failure(st, path);
  FUZZ_CHECK((st == NF_OK) == (flow != NULL && meta != NULL), "outputs disagree with %s",
             nf_status_str(st));
  nf_flow_free(flow);
  nf_meta_free(meta);
  return 0;
}
