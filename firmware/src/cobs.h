/* Consistent Overhead Byte Stuffing (Cheshire & Baker 1999): removes every 0x00 from a
 * block so that 0x00 can delimit frames. */
#ifndef NM_COBS_H
#define NM_COBS_H
#include <stddef.h>
#include <stdint.h>

/* Encodes n bytes of src into dst (room for NM_COBS_MAX_ENCODED(n)); no delimiter added.
 * Returns the encoded length. */
size_t nm_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst);

/* Decodes n bytes (no delimiter) into dst (room for n bytes). Returns the decoded length,
 * or -1 if the input holds a 0x00, a code byte points past the end, or dst_cap is too small. */
long nm_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_cap);
#endif
