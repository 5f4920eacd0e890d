#include "crc16.h"

/* Bitwise, not table-driven: a 512-byte table costs a quarter of an ATmega328p's RAM
 * (or flash reads through pgm_read_word), and 8 shifts per byte keep up with the UART. */
uint16_t nm_crc16_update(uint16_t crc, const uint8_t *data, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        uint8_t b;
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}
