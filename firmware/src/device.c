#include "device.h"
#include <string.h>
#include "command.h"
#include "hal.h"
#include "packet.h"

/* Stream 0 EMG on 16 ADC inputs (10-bit counts centred on 0, 5 V / 1024 per count through a
 * x1000 amplifier), stream 1 a 3-axis accelerometer (already in m/s2), stream 2 four
 * load cells (24-bit bridge ADC, 1 mN per count). */
const nm_stream_cfg_t nm_default_streams[NM_N_SAMPLED_STREAMS] = {
    {0, NM_KIND_EMG, NM_PT_EMG, NM_FMT_I16, 16, 32, 2000, 4.8828125e-06f, "V"},
    {1, NM_KIND_IMU, NM_PT_IMU, NM_FMT_F32, 3, 10, 200, 1.0f, "m/s2"},
    {2, NM_KIND_FORCE, NM_PT_FORCE, NM_FMT_I24, 4, 10, 1000, 0.001f, "N"},
};

/* Samples more than this many periods late are skipped (and counted) rather than sent late:
 * a stalled link must not turn into an ever-growing backlog. */
#define NM_MAX_LATE_PERIODS 8u

static struct {
    nm_device_cfg_t cfg;
    nm_stream_t streams[NM_N_SAMPLED_STREAMS];
    /* Edge ring: written by the interrupt, read by the main loop (one producer, one consumer). */
    volatile uint8_t edge_head, edge_tail;
    uint32_t edge_us[NM_EDGE_RING];
    uint8_t edge_pol[NM_EDGE_RING];
    uint8_t edge_line[NM_EDGE_RING];
    volatile uint8_t edge_overruns;
    uint32_t edge_counter;
    uint8_t rx[NM_RX_MAX];
    uint8_t rx_scratch[NM_RX_MAX];
    uint8_t rx_len;
    uint8_t rx_overflow;
    uint32_t status_due_us;
    uint32_t status_seq;
    uint8_t loopback_high;
    uint32_t loopback_low_due_us;
    nm_device_counters_t counters;
    uint8_t small[192]; /* replies, edges, status */
    uint8_t wire[NM_MAX_WIRE];
} g;

static int due(uint32_t t_us, uint32_t now_us) { return (int32_t)(now_us - t_us) >= 0; }


static void send(const uint8_t *body, uint16_t n)
{
    size_t m;
    if (n == 0) {
        g.counters.buffer_overruns++; /* an encoder overflow: a bug, but never silent */
        return;
    }
    m = nm_frame_encode(body, n, g.wire);
    hal_uart_write(g.wire, m);
}

static void header(nm_header_t *h, uint8_t ptype, uint8_t stream_id, uint32_t counter,
                   uint32_t t_us)
{
    h->version = NM_PROTOCOL_VERSION;
    h->ptype = ptype;
    h->flags = g.cfg.flags;
    h->stream_id = stream_id;
    h->counter = counter;
    h->device_us = t_us;
    h->sample_count = 0;
    h->channel_count = 0;
    h->sample_format = NM_FMT_NONE;
}

static void stream_flush(nm_stream_t *s)
{
    if (s->n_in_packet > 0) {
        send(s->buf, nm_pkt_finish(&s->w, s->n_in_packet));
        s->n_in_packet = 0;
    }
}

static void stream_sample(nm_stream_t *s, uint32_t t_us)
{
    int32_t v[NM_DEV_MAX_CHANNELS];
    uint8_t c;
    if (s->n_in_packet == 0) {
        nm_header_t h;
        header(&h, s->cfg.ptype, s->cfg.stream_id, s->counter, t_us);
        h.flags |= s->pending_flags;
        h.channel_count = s->cfg.channels;
        h.sample_format = s->cfg.format;
        s->pending_flags = 0;
        nm_pkt_begin(&s->w, s->buf, s->buf_cap, &h);
    }
    hal_read_channels(s->cfg.stream_id, s->counter, s->cfg.channels, v);
    for (c = 0; c < s->cfg.channels; c++) {
        nm_pkt_sample(&s->w, s->cfg.format, v[c]);
        if ((s->cfg.format == NM_FMT_I16 && (v[c] >= 32767 || v[c] <= -32768)) ||
            (s->cfg.format == NM_FMT_I24 && (v[c] >= 8388607 || v[c] <= -8388608))) {
            s->w.buf[2] |= NM_FLAG_SATURATED;
        }
    }
    s->counter++;
    if (++s->n_in_packet >= s->cfg.samples_per_packet) {
        stream_flush(s);
    }
}

static void stream_start(nm_stream_t *s, uint32_t now_us)
{
    s->running = 1;
    s->counter = 0;
    s->n_in_packet = 0;
    s->pending_flags = 0;
    s->next_due_us = now_us;
}

static void run_streams(uint32_t now_us)
{
    uint8_t i;
    for (i = 0; i < NM_N_SAMPLED_STREAMS; i++) {
        nm_stream_t *s = &g.streams[i];
        if (!s->running) continue;
        if ((uint32_t)(now_us - s->next_due_us) < 0x80000000u &&
            now_us - s->next_due_us > NM_MAX_LATE_PERIODS * s->period_us) {
            uint32_t skip = (now_us - s->next_due_us) / s->period_us;
            stream_flush(s); /* samples in a packet are consecutive */
            s->counter += skip;
            s->next_due_us += skip * s->period_us;
            s->pending_flags |= NM_FLAG_DISCONTINUITY;
            g.counters.dropped_samples += skip;
        }
        while (due(s->next_due_us, now_us)) {
            stream_sample(s, s->next_due_us);
            s->next_due_us += s->period_us;
        }
    }
}

static uint8_t running_mask(void)
{
    uint8_t i, m = 0;
    for (i = 0; i < NM_N_SAMPLED_STREAMS; i++) {
        if (g.streams[i].running) m |= (uint8_t)(1u << i);
    }
    return m;
}

static void reply_begin(nm_writer_t *w, const nm_cmd_t *cmd, uint8_t status)
{
    nm_header_t h;
    header(&h, NM_PT_COMMAND_REPLY, cmd->stream_id, cmd->seq, hal_clock_us());
    nm_pkt_begin(w, g.small, sizeof g.small, &h);
    nm_pkt_u8(w, cmd->type);
    nm_pkt_u8(w, status);
}

static void put_str(nm_writer_t *w, const char *s, uint8_t max)
{
    uint8_t n = (uint8_t)strlen(s);
    if (n > max) n = max;
    nm_pkt_u8(w, n);
    nm_pkt_bytes(w, (const uint8_t *)s, n);
}

static void reply_identify(nm_writer_t *w)
{
    uint8_t i;
    put_str(w, g.cfg.device_id, NM_MAX_DEVICE_ID);
    nm_pkt_u8(w, g.cfg.fw_major);
    nm_pkt_u8(w, g.cfg.fw_minor);
    nm_pkt_u8(w, g.cfg.fw_patch);
    nm_pkt_u8(w, NM_PROTOCOL_VERSION);
    nm_pkt_u8(w, NM_N_SAMPLED_STREAMS + 1u);
    for (i = 0; i < NM_N_SAMPLED_STREAMS; i++) {
        const nm_stream_t *s = &g.streams[i];
        nm_pkt_u8(w, s->cfg.stream_id);
        nm_pkt_u8(w, s->cfg.kind);
        nm_pkt_u8(w, s->cfg.format);
        nm_pkt_u8(w, s->cfg.channels);
        nm_pkt_u16(w, s->cfg.samples_per_packet);
        nm_pkt_u32(w, s->cfg.rate_hz);
        nm_pkt_f32(w, s->cfg.scale);
        put_str(w, s->cfg.unit, NM_MAX_UNIT);
    }
    /* The trigger stream: edges, not samples; one channel per line, rate 0. */
    nm_pkt_u8(w, NM_TRIGGER_STREAM_ID);
    nm_pkt_u8(w, NM_KIND_TRIGGER);
    nm_pkt_u8(w, NM_FMT_NONE);
    nm_pkt_u8(w, 1);
    nm_pkt_u16(w, 0);
    nm_pkt_u32(w, 0);
    nm_pkt_f32(w, 1.0f);
    put_str(w, "", NM_MAX_UNIT);
}

static void handle_command(const uint8_t *frame, uint8_t n, uint32_t rx_us)
{
    nm_cmd_t cmd;
    uint8_t status = NM_ST_OK;
    nm_writer_t w;
    uint8_t i;
    uint32_t now_us;
    int r = nm_cmd_parse(frame, n, g.rx_scratch, &cmd, &status);
    if (r == NM_CMD_DROP) {
        g.counters.rx_bad_frames++;
        return;
    }
    if (r == NM_CMD_REPLY_ERR) {
        reply_begin(&w, &cmd, status);
        send(g.small, nm_pkt_finish(&w, 0));
        return;
    }
    now_us = hal_clock_us();
    switch (cmd.type) {
    case NM_CMD_IDENTIFY:
        reply_begin(&w, &cmd, NM_ST_OK);
        reply_identify(&w);
        break;
    case NM_CMD_START:
    case NM_CMD_STOP:
        for (i = 0; i < NM_N_SAMPLED_STREAMS; i++) {
            nm_stream_t *s = &g.streams[i];
            if (!(cmd.stream_mask & (1u << i))) continue;
            if (cmd.type == NM_CMD_START && !s->running) {
                stream_start(s, now_us);
            } else if (cmd.type == NM_CMD_STOP && s->running) {
                stream_flush(s); /* a partial last packet is still sent */
                s->running = 0;
            }
        }
        reply_begin(&w, &cmd, NM_ST_OK);
        nm_pkt_u8(&w, running_mask());
        break;
    case NM_CMD_SET_RATE:
        if (cmd.stream_id >= NM_N_SAMPLED_STREAMS || cmd.rate_hz == 0 ||
            cmd.rate_hz > NM_MAX_RATE_HZ || 1000000u % cmd.rate_hz != 0) {
            reply_begin(&w, &cmd, NM_ST_BAD_ARGUMENT);
            break;
        } else {
            nm_stream_t *s = &g.streams[cmd.stream_id];
            stream_flush(s);
            s->cfg.rate_hz = cmd.rate_hz;
            s->period_us = 1000000u / cmd.rate_hz;
            if (s->running) s->next_due_us = now_us;
            reply_begin(&w, &cmd, NM_ST_OK);
            nm_pkt_u32(&w, s->cfg.rate_hz);
        }
        break;
    case NM_CMD_TIME_SYNC_PING: {
        nm_header_t h;
        uint32_t tx_us = hal_clock_us();
        header(&h, NM_PT_TIME_SYNC_REPLY, 0, cmd.seq, tx_us);
        nm_pkt_begin(&w, g.small, sizeof g.small, &h);
        nm_pkt_u32(&w, cmd.seq);
        nm_pkt_u32(&w, rx_us);
        nm_pkt_u32(&w, tx_us);
        send(g.small, nm_pkt_finish(&w, 0));
        return;
    }
    case NM_CMD_LOOPBACK_TRIGGER:
        if (g.loopback_high) {
            reply_begin(&w, &cmd, NM_ST_BAD_STATE);
            break;
        }
        g.loopback_high = 1;
        g.loopback_low_due_us = now_us + cmd.pulse_us;
        hal_loopback_set(1);
        reply_begin(&w, &cmd, NM_ST_OK);
        nm_pkt_u32(&w, now_us);
        break;
    default:
        reply_begin(&w, &cmd, NM_ST_UNKNOWN_COMMAND);
        break;
    }
    send(g.small, nm_pkt_finish(&w, 0));
}

static void poll_input(void)
{
    uint8_t buf[32];
    size_t n, i;
    while ((n = hal_uart_read(buf, sizeof buf)) > 0) {
        for (i = 0; i < n; i++) {
            uint8_t b = buf[i];
            if (b != 0) {
                if (g.rx_len < NM_RX_MAX) {
                    g.rx[g.rx_len++] = b;
                } else {
                    g.rx_overflow = 1;
                }
                continue;
            }
            /* The delimiter ends a frame: its arrival is the command's reception time. */
            if (g.rx_overflow) {
                g.counters.rx_bad_frames++;
            } else if (g.rx_len > 0) {
                handle_command(g.rx, g.rx_len, hal_clock_us());
            }
            g.rx_len = 0;
            g.rx_overflow = 0;
        }
    }
}

void nm_on_trigger_edge(uint8_t line, uint8_t polarity, uint32_t t_us)
{
    uint8_t next = (uint8_t)((g.edge_head + 1u) % NM_EDGE_RING);
    if (next == g.edge_tail) {
        g.edge_overruns++;
        return;
    }
    g.edge_us[g.edge_head] = t_us;
    g.edge_pol[g.edge_head] = polarity;
    g.edge_line[g.edge_head] = line;
    g.edge_head = next;
}

static void drain_edges(void)
{
    while (g.edge_tail != g.edge_head) {
        uint8_t k = g.edge_tail;
        nm_header_t h;
        nm_writer_t w;
        header(&h, NM_PT_TRIGGER_EDGE, NM_TRIGGER_STREAM_ID, g.edge_counter, g.edge_us[k]);
        nm_pkt_begin(&w, g.small, sizeof g.small, &h);
        nm_pkt_u32(&w, g.edge_us[k]);
        nm_pkt_u8(&w, g.edge_pol[k]);
        nm_pkt_u8(&w, g.edge_line[k]);
        nm_pkt_u32(&w, g.edge_counter);
        g.edge_counter++;
        g.edge_tail = (uint8_t)((k + 1u) % NM_EDGE_RING);
        send(g.small, nm_pkt_finish(&w, 0));
    }
    if (g.edge_overruns) {
        g.counters.buffer_overruns += g.edge_overruns;
        g.edge_overruns = 0;
    }
}

static void send_status(uint32_t now_us)
{
    nm_header_t h;
    nm_writer_t w;
    uint16_t mv = hal_battery_mv();
    header(&h, NM_PT_STATUS, 0, g.status_seq++, now_us);
    nm_pkt_begin(&w, g.small, sizeof g.small, &h);
    nm_pkt_u16(&w, mv);
    nm_pkt_u8(&w, 255); /* charge percentage unknown: no fuel gauge */
    nm_pkt_u8(&w, running_mask());
    nm_pkt_u32(&w, g.counters.buffer_overruns);
    nm_pkt_u32(&w, g.counters.dropped_samples);
    nm_pkt_u32(&w, g.counters.rx_bad_frames);
    send(g.small, nm_pkt_finish(&w, 0));
}

void nm_device_poll(void)
{
    uint32_t now_us;
    poll_input();
    drain_edges();
    now_us = hal_clock_us();
    if (g.loopback_high && due(g.loopback_low_due_us, now_us)) {
        g.loopback_high = 0;
        hal_loopback_set(0);
        drain_edges();
    }
    run_streams(now_us);
    if (due(g.status_due_us, now_us)) {
        send_status(now_us);
        g.status_due_us = now_us + g.cfg.status_period_us;
    }
}

uint32_t nm_device_next_due_us(void)
{
    uint32_t now_us = hal_clock_us();
    uint32_t best = 10000u; /* poll input at least every 10 ms */
    uint32_t d;
    uint8_t i;
    for (i = 0; i < NM_N_SAMPLED_STREAMS; i++) {
        if (!g.streams[i].running) continue;
        d = g.streams[i].next_due_us - now_us;
        if (d >= 0x80000000u) d = 0;
        if (d < best) best = d;
    }
    d = g.status_due_us - now_us;
    if (d >= 0x80000000u) d = 0;
    if (d < best) best = d;
    if (g.loopback_high) {
        d = g.loopback_low_due_us - now_us;
        if (d >= 0x80000000u) d = 0;
        if (d < best) best = d;
    }
    return now_us + best;
}

void nm_device_start(uint8_t mask)
{
    uint8_t i;
    uint32_t now_us = hal_clock_us();
    for (i = 0; i < NM_N_SAMPLED_STREAMS; i++) {
        if ((mask & (1u << i)) && !g.streams[i].running) stream_start(&g.streams[i], now_us);
    }
}

nm_device_counters_t nm_device_counters(void) { return g.counters; }

void nm_device_init(const nm_device_cfg_t *cfg, const nm_stream_cfg_t *streams,
                    uint8_t *const *buffers, const uint16_t *buf_caps)
{
    uint8_t i;
    memset(&g, 0, sizeof g);
    g.cfg = *cfg;
    for (i = 0; i < NM_N_SAMPLED_STREAMS; i++) {
        g.streams[i].cfg = streams[i];
        g.streams[i].buf = buffers[i];
        g.streams[i].buf_cap = buf_caps[i];
        g.streams[i].period_us = 1000000u / streams[i].rate_hz;
    }
    g.status_due_us = hal_clock_us();
}

/* Murmur3's 32-bit finaliser: a cheap, well-mixed hash that is identical on 8-bit AVR. */
static uint32_t mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

int32_t nm_sim_value(uint32_t seed, uint8_t stream_id, uint8_t channel, uint32_t counter)
{
    uint32_t h = mix32(seed ^ mix32(counter * 0x9E3779B1u + ((uint32_t)stream_id << 8) + channel));
    int32_t noise = (int32_t)(h % 201u) - 100; /* +-100 counts */
    switch (stream_id) {
    case 0: /* EMG: rest noise with a 150 ms burst (x8) every second at 2 kHz */
        return ((counter % 2000u) >= 1000u && (counter % 2000u) < 1300u) ? noise * 8 : noise;
    case 1: /* accelerometer in 1/1024 m/s2: gravity on z */
        return (channel == 2 ? 10045 : 0) + noise / 4;
    default: /* load cells around 200 N, 1 mN per count */
        return 200000 + (int32_t)channel * 1000 + noise;
    }
}
