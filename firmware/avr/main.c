/* AVR build of the reference firmware (ATmega2560, 16 MHz): EMG from the 16 ADC inputs, the
 * trigger on INT0 (PD0), frames on USART0 at 1 Mbaud.
 *
 * NM_SCRIPT builds the scripted test mode for simavr: virtual clock and simulated values as in
 * the host build, the loopback edge still goes through the real INT0 interrupt (the AVR fires
 * INTx on a pin it drives itself), and frames leave as hex text because simavr's UART console
 * only passes printable characters. The hex is decoded back to bytes by tests/hexextract.c. */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <util/atomic.h>

#include "device.h"
#include "hal.h"
#include "script.h"

#define RX_RING 64u

static volatile uint32_t t1_overflows;
static volatile uint8_t rx_ring[RX_RING];
static volatile uint8_t rx_head, rx_tail;

ISR(TIMER1_OVF_vect) { t1_overflows++; }

ISR(USART0_RX_vect)
{
    uint8_t b = UDR0;
    uint8_t next = (uint8_t)((rx_head + 1u) % RX_RING);
    if (next != rx_tail) { /* a full ring drops the byte: the frame then fails its CRC */
        rx_ring[rx_head] = b;
        rx_head = next;
    }
}

ISR(INT0_vect)
{
    uint32_t t_us = hal_clock_us(); /* first: the edge's own time, before any other work */
    nm_on_trigger_edge(0, (uint8_t)(PIND & 1u), t_us);
}

uint32_t hal_clock_us(void)
{
#ifdef NM_SCRIPT
    return nm_vclock_us();
#else
    uint32_t ovf;
    uint16_t cnt;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        ovf = t1_overflows;
        cnt = TCNT1;
        /* An overflow pending but not yet serviced belongs to this reading. */
        if ((TIFR1 & (1 << TOV1)) && cnt < 0x8000u) ovf++;
    }
    /* Timer1 at F_CPU/8 = 2 MHz: one overflow is 32768 us; wraps with the 32-bit clock. */
    return (ovf << 15) + (cnt >> 1);
#endif
}

void hal_wait_until(uint32_t t_us)
{
#ifdef NM_SCRIPT
    nm_vclock_wait_until(t_us);
#else
    while ((int32_t)(t_us - hal_clock_us()) > 0 && rx_head == rx_tail) {
    }
#endif
}

#ifndef NM_SCRIPT
static uint16_t adc_read(uint8_t ch)
{
    ADMUX = (uint8_t)((1 << REFS0) | (ch & 7u));
    if (ch & 8u) ADCSRB |= (1 << MUX5);
    else ADCSRB &= (uint8_t)~(1 << MUX5);
    ADCSRA |= (1 << ADSC);
    while (ADCSRA & (1 << ADSC)) {
    }
    return ADC;
}
#endif

void hal_read_channels(uint8_t stream_id, uint32_t counter, uint8_t n, int32_t *out)
{
    uint8_t c;
#ifndef NM_SCRIPT
    if (stream_id == 0) {
        for (c = 0; c < n; c++) out[c] = (int32_t)adc_read(c) - 512; /* mid-supply bias */
        return;
    }
#endif
    /* No accelerometer or load cell on the reference board: simulated, flagged in the header. */
    for (c = 0; c < n; c++) out[c] = nm_sim_value(NM_SCRIPT_SEED, stream_id, c, counter);
}

size_t hal_uart_read(uint8_t *buf, size_t cap)
{
#ifdef NM_SCRIPT
    return nm_script_read(buf, cap);
#else
    size_t n = 0;
    while (n < cap && rx_tail != rx_head) {
        buf[n++] = rx_ring[rx_tail];
        rx_tail = (uint8_t)((rx_tail + 1u) % RX_RING);
    }
    return n;
#endif
}

static void uart_put(uint8_t b)
{
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = b;
}

void hal_uart_write(const uint8_t *buf, size_t n)
{
    size_t i;
#ifdef NM_SCRIPT
    static const char hex[] = "0123456789abcdef";
    for (i = 0; i < n; i++) {
        uart_put((uint8_t)hex[buf[i] >> 4]);
        uart_put((uint8_t)hex[buf[i] & 15u]);
        if (buf[i] == 0) uart_put('\n'); /* one frame per console line */
    }
#else
    for (i = 0; i < n; i++) uart_put(buf[i]);
#endif
}

void hal_loopback_set(uint8_t level)
{
#ifdef NM_SCRIPT
    /* simavr has no wire between pins: drive INT0's own pin (PD0) as an output. */
    if (level) PORTD |= 1u;
    else PORTD &= (uint8_t)~1u;
#else
    /* PB7 (the on-board LED, pin 13) is wired to PD0/INT0 (pin 21) on the reference board. */
    if (level) PORTB |= (1u << 7);
    else PORTB &= (uint8_t)~(1u << 7);
#endif
    /* Give the interrupt the two cycles it needs to be taken before the caller goes on. */
    __asm__ __volatile__("nop\n\tnop");
}

uint16_t hal_battery_mv(void) { return 0; }

int hal_should_stop(void)
{
#ifdef NM_SCRIPT
    return nm_script_done();
#else
    return 0;
#endif
}

int main(void)
{
    static uint8_t emg_buf[16 * 32 * 2 + NM_HEADER_SIZE + NM_CRC_SIZE];
    static uint8_t imu_buf[3 * 10 * 4 + NM_HEADER_SIZE + NM_CRC_SIZE];
    static uint8_t force_buf[4 * 10 * 3 + NM_HEADER_SIZE + NM_CRC_SIZE];
    uint8_t *const bufs[NM_N_SAMPLED_STREAMS] = {emg_buf, imu_buf, force_buf};
    const uint16_t caps[NM_N_SAMPLED_STREAMS] = {sizeof emg_buf, sizeof imu_buf,
                                                 sizeof force_buf};
    nm_device_cfg_t cfg = {"nmcore-ref", 1, 0, 0, NM_SCRIPT_SEED, 1000000u, 0};

    /* USART0: 1 Mbaud (U2X, UBRR 1 at 16 MHz: exact), 8N1, RX interrupt. */
    UCSR0A = (1 << U2X0);
    UBRR0H = 0;
    UBRR0L = 1;
    UCSR0C = (1 << UCSZ01) | (1 << UCSZ00);
    UCSR0B = (1 << TXEN0) | (1 << RXEN0) | (1 << RXCIE0);
    /* Timer1 free-running at F_CPU/8 for the microsecond clock. */
    TCCR1A = 0;
    TCCR1B = (1 << CS11);
    TIMSK1 = (1 << TOIE1);
    /* ADC: AVcc reference, prescaler 16 (1 MHz ADC clock, 13 us per conversion) so 16
     * channels fit in a 500 us sample period; costs about one bit of accuracy. */
    ADCSRA = (1 << ADEN) | (1 << ADPS2);
    /* INT0 on any edge. */
    EICRA = (1 << ISC00);
    EIMSK = (1 << INT0);
#ifdef NM_SCRIPT
    DDRD |= 1u;
    cfg.seed = NM_SCRIPT_SEED;
    cfg.status_period_us = NM_SCRIPT_STATUS_PERIOD_US;
    cfg.flags = NM_FLAG_SIMULATED;
    nm_script_init();
    uart_put('@');
#else
    DDRB |= (1u << 7);
#endif
    sei();
    nm_device_init(&cfg, nm_default_streams, bufs, caps);
    while (!hal_should_stop()) {
        nm_device_poll();
        hal_wait_until(nm_device_next_due_us());
    }
#ifdef NM_SCRIPT
    UCSR0A = (1 << U2X0) | (1 << TXC0); /* clear TXC0 so the wait below sees the last byte */
    uart_put('$');
    uart_put('\n');
    while (!(UCSR0A & (1 << TXC0))) {
    }
    /* simavr ends the simulation when the CPU sleeps with interrupts off. */
    cli();
    sleep_enable();
    sleep_cpu();
#endif
    return 0;
}
