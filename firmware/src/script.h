/* The scripted test mode shared by the host and AVR builds: a virtual clock and a fixed list
 * of commands fed in at fixed device times. Both builds run the same core over it, so their
 * output must be byte-identical (make -C firmware test compares them). */
#ifndef NM_SCRIPT_H
#define NM_SCRIPT_H
#include <stddef.h>
#include <stdint.h>

/* Starts 65.536 ms before the 32-bit microsecond clock wraps, so every run crosses the wrap. */
#define NM_SCRIPT_T0_US 0xFFFF0000u
#define NM_SCRIPT_LENGTH_US 110000u
#define NM_SCRIPT_SEED 20240611u
#define NM_SCRIPT_STATUS_PERIOD_US 50000u

void nm_script_init(void);
uint32_t nm_vclock_us(void);
/* Jumps the virtual clock to t_us, or to the next scripted command if that comes first. */
void nm_vclock_wait_until(uint32_t t_us);
/* Copies the frames of every command due by now (one per call). */
size_t nm_script_read(uint8_t *buf, size_t cap);
int nm_script_done(void);
#endif
