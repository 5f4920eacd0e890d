#include "script.h"
#include "command.h"
#include "nm_protocol.h"
#include "packet.h"

typedef struct {
    uint32_t at_us; /* after NM_SCRIPT_T0_US */
    uint8_t type;
    uint8_t stream_id;
    uint8_t mask;
    uint32_t rate_hz;
    uint16_t pulse_us;
    uint8_t corrupt; /* flip a CRC bit: the device must count it and not answer */
} step_t;

static const step_t steps[] = {
    {0, NM_CMD_IDENTIFY, 0, 0, 0, 0, 0},
    {1000, NM_CMD_START, 0, 0xFF, 0, 0, 0},
    {10000, NM_CMD_TIME_SYNC_PING, 0, 0, 0, 0, 0},
    {20000, NM_CMD_SET_RATE, 1, 0, 100, 0, 0},
    {25000, NM_CMD_SET_RATE, 0, 0, 3, 0, 0}, /* 1e6/3 is no whole period: BAD_ARGUMENT */
    {30000, NM_CMD_LOOPBACK_TRIGGER, 0, 0, 0, 500, 0},
    {40000, NM_CMD_IDENTIFY, 0, 0, 0, 0, 1},
    {45000, 0x9F, 0, 0, 0, 0, 0}, /* unknown command: UNKNOWN_COMMAND reply */
    {70000, NM_CMD_TIME_SYNC_PING, 0, 0, 0, 0, 0},
    {90000, NM_CMD_STOP, 0, 0x01, 0, 0, 0},
};
#define N_STEPS (sizeof steps / sizeof steps[0])

static uint32_t now_us;
static uint8_t next_step;

void nm_script_init(void)
{
    now_us = NM_SCRIPT_T0_US;
    next_step = 0;
}

uint32_t nm_vclock_us(void) { return now_us; }

void nm_vclock_wait_until(uint32_t t_us)
{
    uint32_t target = t_us;
    if (next_step < N_STEPS) {
        uint32_t step_us = NM_SCRIPT_T0_US + steps[next_step].at_us;
        if ((int32_t)(step_us - target) < 0) target = step_us;
    }
    if ((int32_t)(target - now_us) > 0) now_us = target;
}

size_t nm_script_read(uint8_t *buf, size_t cap)
{
    uint8_t body[32];
    nm_cmd_t cmd;
    uint16_t n;
    const step_t *s;
    if (next_step >= N_STEPS ||
        (int32_t)(now_us - (NM_SCRIPT_T0_US + steps[next_step].at_us)) < 0) {
        return 0;
    }
    s = &steps[next_step++];
    cmd.type = s->type;
    cmd.stream_id = s->stream_id;
    cmd.seq = next_step; /* 1-based sequence numbers */
    cmd.stream_mask = s->mask;
    cmd.rate_hz = s->rate_hz;
    cmd.pulse_us = s->pulse_us;
    n = nm_cmd_build(&cmd, body, sizeof body);
    if (s->corrupt) body[n - 1] ^= 0x01;
    if (NM_COBS_MAX_ENCODED(n) + 1u > cap) return 0;
    return nm_frame_encode(body, n, buf);
}

int nm_script_done(void) { return (uint32_t)(now_us - NM_SCRIPT_T0_US) >= NM_SCRIPT_LENGTH_US; }
