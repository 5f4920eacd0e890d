/* The hardware abstraction the portable core runs on. One implementation per target:
 * host/hal_host.c (simulated sensors, stdio or a pty) and avr/hal_avr.c (ADC, INT0, USART0). */
#ifndef NM_HAL_H
#define NM_HAL_H
#include <stddef.h>
#include <stdint.h>

/* Device clock in microseconds; wraps at 2^32 (71.6 min). */
uint32_t hal_clock_us(void);
/* Idle until the clock reaches t_us or input may have arrived (real time), or jump there
 * (virtual time). */
void hal_wait_until(uint32_t t_us);
/* Reads one sample of every channel of a stream into out (raw converter counts). `counter` is
 * the stream's sample counter: simulated sources are a pure function of it. */
void hal_read_channels(uint8_t stream_id, uint32_t counter, uint8_t n_channels, int32_t *out);
/* Non-blocking: copies up to cap received bytes into buf, returns how many. */
size_t hal_uart_read(uint8_t *buf, size_t cap);
/* Blocking write of a whole frame. */
void hal_uart_write(const uint8_t *buf, size_t n);
/* Drives the loopback output that is wired to trigger line 0. */
void hal_loopback_set(uint8_t level);
/* Battery voltage in millivolts, 0 when unknown (mains powered). */
uint16_t hal_battery_mv(void);
/* Nonzero when the run should end (host --duration-s, end of a script). */
int hal_should_stop(void);

/* Implemented by the core, called by the HAL from the trigger interrupt with the interrupt's
 * own timestamp, taken first thing in the handler. */
void nm_on_trigger_edge(uint8_t line, uint8_t polarity, uint32_t t_us);
#endif
