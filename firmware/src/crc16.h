/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor
 * (check value 0x29B1 for "123456789"; Python: binascii.crc_hqx(data, 0xFFFF)). */
#ifndef NM_CRC16_H
#define NM_CRC16_H
#include <stddef.h>
#include <stdint.h>
#define NM_CRC16_INIT 0xFFFFu
uint16_t nm_crc16_update(uint16_t crc, const uint8_t *data, size_t n);
#endif
