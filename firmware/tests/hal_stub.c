/* A HAL for the unit tests and the vector generator: a settable clock, recorded output. */
#include <string.h>
#include "hal.h"
#include "hal_stub.h"

uint32_t stub_now_us;
uint8_t stub_out[1u << 16];
size_t stub_out_len;
const uint8_t *stub_in;
size_t stub_in_len;
uint8_t stub_loopback;

uint32_t hal_clock_us(void) { return stub_now_us; }
void hal_wait_until(uint32_t t_us) { stub_now_us = t_us; }
void hal_read_channels(uint8_t stream_id, uint32_t counter, uint8_t n, int32_t *out)
{
    uint8_t c;
    for (c = 0; c < n; c++) out[c] = nm_sim_value(1, stream_id, c, counter);
}
size_t hal_uart_read(uint8_t *buf, size_t cap)
{
    size_t n = stub_in_len < cap ? stub_in_len : cap;
    memcpy(buf, stub_in, n);
    stub_in += n;
    stub_in_len -= n;
    return n;
}
void hal_uart_write(const uint8_t *buf, size_t n)
{
    if (stub_out_len + n <= sizeof stub_out) {
        memcpy(stub_out + stub_out_len, buf, n);
        stub_out_len += n;
    }
}
void hal_loopback_set(uint8_t level)
{
    if (level != stub_loopback) {
        stub_loopback = level;
        nm_on_trigger_edge(0, level, stub_now_us);
    }
}
uint16_t hal_battery_mv(void) { return 3700; }
int hal_should_stop(void) { return 0; }
