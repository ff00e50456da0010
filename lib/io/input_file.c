/* lib/io/input_file.c — opening a file to read, as every reader does. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "io_internal.h"

nf_status nf_open_input(const char *path, FILE **f, uint64_t *size)
{
  FILE *fp = fopen(path, "rb");
  if (!fp) return nf_fail(NF_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  nf_status st = NF_OK;
  if (fstat(fileno(fp), &sb) != 0)
    st = nf_fail(NF_EIO, "%s: cannot stat: %s", path, strerror(errno));
  else if (S_ISDIR(sb.st_mode))
    st = nf_fail(NF_EIO, "%s: is a directory", path);
  if (st != NF_OK) {
    fclose(fp);
    return st;
  }
  *f = fp;
  *size = S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : NF_SIZE_UNKNOWN;
  return NF_OK;
}
