#include "cobs.h"

size_t nm_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst)
{
    size_t out = 1, code_at = 0;
    uint8_t code = 1;
    size_t i;
    for (i = 0; i < n; i++) {
        if (src[i] == 0) {
            dst[code_at] = code;
            code_at = out++;
            code = 1;
        } else {
            dst[out++] = src[i];
            code++;
            /* A full block of 254 data bytes ends without an implied zero. */
            if (code == 0xFF) {
                dst[code_at] = code;
                code_at = out++;
                code = 1;
            }
        }
    }
    dst[code_at] = code;
    return out;
}

long nm_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_cap)
{
    size_t i = 0, out = 0;
    while (i < n) {
        uint8_t code = src[i++];
        size_t k;
        if (code == 0 || i + (size_t)code - 1u > n) {
            return -1;
        }
        for (k = 1; k < code; k++) {
            if (src[i] == 0 || out >= dst_cap) {
                return -1;
            }
            dst[out++] = src[i++];
        }
        /* Every block but a full one implies a zero, except at the very end. */
        if (code != 0xFF && i < n) {
            if (out >= dst_cap) {
                return -1;
            }
            dst[out++] = 0;
        }
    }
    return (long)out;
}
