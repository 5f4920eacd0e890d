#ifndef NM_HAL_STUB_H
#define NM_HAL_STUB_H
#include <stddef.h>
#include <stdint.h>
#include "device.h"
extern uint32_t stub_now_us;
extern uint8_t stub_out[1u << 16];
extern size_t stub_out_len;
extern const uint8_t *stub_in;
extern size_t stub_in_len;
extern uint8_t stub_loopback;
#endif
