/* lib/io/crc32.c — table-driven CRC-32 (IEEE 802.3, as zlib's crc32). */
#include <threads.h>

#include "io/io_internal.h"

static uint32_t crc_table[256];
static once_flag crc_table_once = ONCE_FLAG_INIT;

/* Fills crc_table: the CRC of each byte value under the reflected polynomial 0xEDB88320. */
static void build_crc_table(void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

uint32_t nf_crc32(uint32_t crc, const void *buf, size_t len)
{
  call_once(&crc_table_once, build_crc_table);
  const unsigned char *p = buf;
  uint32_t c = crc ^ 0xFFFFFFFFu;
  for (size_t i = 0; i < len; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}
