/* Generates the golden vectors (protocol/vectors/, JSON) from the C encoder.
 * usage: gen_vectors OUT_DIR HOST_SCRIPT_BIN
 * Every vector is decoded again with the C parser before it is written (a vector the C side
 * cannot read back is a generator bug, reported with exit status 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cobs.h"
#include "command.h"
#include "crc16.h"
#include "device.h"
#include "packet.h"

static FILE *out;
static int first_vec;
static int errors;

static const char *ptype_name(uint8_t t)
{
    switch (t) {
    case NM_PT_EMG: return "emg";
    case NM_PT_IMU: return "imu";
    case NM_PT_FORCE: return "force";
    case NM_PT_TRIGGER_EDGE: return "trigger_edge";
    case NM_PT_STATUS: return "status";
    case NM_PT_COMMAND_REPLY: return "command_reply";
    case NM_PT_TIME_SYNC_REPLY: return "time_sync_reply";
    case NM_CMD_IDENTIFY: return "identify";
    case NM_CMD_START: return "start";
    case NM_CMD_STOP: return "stop";
    case NM_CMD_SET_RATE: return "set_rate";
    case NM_CMD_TIME_SYNC_PING: return "time_sync_ping";
    case NM_CMD_LOOPBACK_TRIGGER: return "loopback_trigger";
    default: return "unknown";
    }
}

static const char *fmt_name(uint8_t f)
{
    switch (f) {
    case NM_FMT_I16: return "i16";
    case NM_FMT_I24: return "i24";
    case NM_FMT_I32: return "i32";
    case NM_FMT_F32: return "f32";
    default: return "none";
    }
}

static void open_file(const char *dir, const char *name, const char *description)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    out = fopen(path, "w");
    if (!out) {
        perror(path);
        exit(1);
    }
    fprintf(out, "{\n  \"protocol_version\": %u,\n  \"generator\": \"firmware/tests/gen_vectors.c\",\n",
            NM_PROTOCOL_VERSION);
    fprintf(out, "  \"description\": \"%s\",\n  \"vectors\": [", description);
    first_vec = 1;
}

static void close_file(void)
{
    fprintf(out, "\n  ]\n}\n");
    fclose(out);
}

static void hex(const uint8_t *p, size_t n)
{
    size_t i;
    fputc('"', out);
    for (i = 0; i < n; i++) fprintf(out, "%02x", p[i]);
    fputc('"', out);
}

static void begin_vec(const char *name)
{
    fprintf(out, "%s\n    {\"name\": \"%s\"", first_vec ? "" : ",", name);
    first_vec = 0;
}

/* Writes the frame and its decoded header; returns the parse result of the C parser. */
static int frame_and_header(const uint8_t *body, uint16_t n, nm_header_t *h, const uint8_t **p,
                            uint16_t *plen)
{
    static uint8_t wire[NM_MAX_WIRE + 16];
    size_t m = nm_frame_encode(body, n, wire);
    int r = nm_parse_body(body, n, h, p, plen);
    fprintf(out, ",\n     \"frame_hex\": ");
    hex(wire, m);
    if (r != NM_PARSE_OK) {
        fprintf(stderr, "gen_vectors: generated body does not parse (%d)\n", r);
        errors++;
        return r;
    }
    fprintf(out,
            ",\n     \"header\": {\"version\": %u, \"ptype\": \"%s\", \"ptype_code\": %u, \"flags\": %u, "
            "\"stream_id\": %u, \"counter\": %lu, \"device_us\": %lu, \"sample_count\": %u, "
            "\"channel_count\": %u, \"sample_format\": \"%s\"}",
            h->version, ptype_name(h->ptype), h->ptype, h->flags, h->stream_id,
            (unsigned long)h->counter, (unsigned long)h->device_us, h->sample_count,
            h->channel_count, fmt_name(h->sample_format));
    return r;
}

static void sample_vec(const char *name, uint8_t ptype, uint8_t flags, uint8_t stream,
                       uint32_t counter, uint32_t t_us, uint8_t fmt, uint8_t ch, uint16_t ns,
                       const int32_t *values)
{
    static uint8_t body[NM_MAX_BODY];
    nm_writer_t w;
    nm_header_t h = {NM_PROTOCOL_VERSION, 0, 0, 0, 0, 0, 0, 0, 0}, hp;
    const uint8_t *p;
    uint16_t plen, n, s;
    uint8_t c;
    unsigned width;
    h.ptype = ptype;
    h.flags = flags;
    h.stream_id = stream;
    h.counter = counter;
    h.device_us = t_us;
    h.channel_count = ch;
    h.sample_format = fmt;
    nm_pkt_begin(&w, body, sizeof body, &h);
    for (s = 0; s < ns; s++)
        for (c = 0; c < ch; c++) nm_pkt_sample(&w, fmt, values[s * ch + c]);
    n = nm_pkt_finish(&w, ns);
    begin_vec(name);
    if (frame_and_header(body, n, &hp, &p, &plen) != NM_PARSE_OK) return;
    /* Values as decoded from the wire bytes (not as given), so the JSON is what a decoder sees. */
    width = nm_format_width(fmt);
    fprintf(out, ",\n     \"samples\": [");
    for (s = 0; s < ns; s++) {
        fprintf(out, "%s[", s ? ", " : "");
        for (c = 0; c < ch; c++) {
            const uint8_t *q = p + ((size_t)s * ch + c) * width;
            if (c) fputs(", ", out);
            switch (fmt) {
            case NM_FMT_I16: fprintf(out, "%d", (int16_t)nm_get_u16(q)); break;
            case NM_FMT_I24: fprintf(out, "%ld", (long)nm_get_i24(q)); break;
            case NM_FMT_I32: fprintf(out, "%ld", (long)(int32_t)nm_get_u32(q)); break;
            default: fprintf(out, "%.9g", (double)nm_get_f32(q)); break;
            }
        }
        fputc(']', out);
    }
    fprintf(out, "]}");
}

static void gen_samples(const char *dir)
{
    static int32_t v[16 * 32];
    int i;
    open_file(dir, "samples.json", "Sample packets of every format; samples are [sample][channel].");
    for (i = 0; i < 16 * 32; i++) v[i] = nm_sim_value(7, 0, (uint8_t)(i % 16), (uint32_t)(1000 + i / 16));
    sample_vec("emg_i16_16ch_32s", NM_PT_EMG, NM_FLAG_SIMULATED, 0, 1000, 123456789u, NM_FMT_I16, 16, 32, v);
    for (i = 0; i < 16 * 32; i++) v[i] *= 9973;
    sample_vec("emg_i24_16ch_32s", NM_PT_EMG, 0, 0, 4294967280u, 4294967000u, NM_FMT_I24, 16, 32, v);
    for (i = 0; i < 30; i++) v[i] = nm_sim_value(7, 1, (uint8_t)(i % 3), (uint32_t)(i / 3));
    sample_vec("imu_f32_3ch_10s", NM_PT_IMU, NM_FLAG_SIMULATED, 1, 0, 0, NM_FMT_F32, 3, 10, v);
    for (i = 0; i < 40; i++) v[i] = nm_sim_value(7, 2, (uint8_t)(i % 4), (uint32_t)(i / 4));
    sample_vec("force_i24_4ch_10s", NM_PT_FORCE, 0, 2, 77, 5000000u, NM_FMT_I24, 4, 10, v);
    {
        const int32_t ext16[] = {32767, -32768, 0, -1, 1, 255, -256, 0x1234};
        const int32_t ext24[] = {8388607, -8388608, 0, -1, 65536, -65537, 0x123456, 255};
        const int32_t ext32[] = {2147483647, -2147483647 - 1, 0, -1, 16777216, -16777217, 0x12345678, 0};
        const int32_t extf[] = {0, 1024, -1024, 1, -1, 32767 * 1024, -8388607, 3};
        sample_vec("extremes_i16", NM_PT_EMG, NM_FLAG_SATURATED, 9, 0xFFFFFFFFu, 0xFFFFFFFFu, NM_FMT_I16, 2, 4, ext16);
        sample_vec("extremes_i24", NM_PT_FORCE, NM_FLAG_SATURATED, 2, 1, 2, NM_FMT_I24, 4, 2, ext24);
        sample_vec("extremes_i32", NM_PT_FORCE, NM_FLAG_DISCONTINUITY, 4, 3, 4, NM_FMT_I32, 1, 8, ext32);
        sample_vec("extremes_f32", NM_PT_IMU, 0, 1, 5, 6, NM_FMT_F32, 8, 1, extf);
        sample_vec("one_sample_one_channel", NM_PT_EMG, 0, 0, 0, 0, NM_FMT_I16, 1, 1, ext16);
    }
    /* A body whose COBS form needs more than one 254-byte block, with zeros at block edges. */
    for (i = 0; i < 16 * 32; i++) v[i] = (i % 127 == 0) ? 0 : i;
    sample_vec("emg_i16_zero_runs", NM_PT_EMG, 0, 0, 0, 0, NM_FMT_I16, 16, 32, v);
    for (i = 0; i < 16 * 32; i++) v[i] = 0x010101; /* no zero byte at all in the payload */
    sample_vec("emg_i24_no_zero_bytes", NM_PT_EMG, 0, 0x11, 0x01010101u, 0x01010101u, NM_FMT_I24, 16, 32, v);
    close_file();
}

typedef void (*payload_fn)(nm_writer_t *w);

static uint16_t build(uint8_t *body, uint16_t cap, uint8_t ptype, uint8_t stream, uint32_t counter,
                      uint32_t t_us, payload_fn fn)
{
    nm_writer_t w;
    nm_header_t h = {NM_PROTOCOL_VERSION, 0, 0, 0, 0, 0, 0, 0, 0};
    h.ptype = ptype;
    h.stream_id = stream;
    h.counter = counter;
    h.device_us = t_us;
    nm_pkt_begin(&w, body, cap, &h);
    if (fn) fn(&w);
    return nm_pkt_finish(&w, 0);
}

static void pl_edge(nm_writer_t *w)
{
    nm_pkt_u32(w, 4294967295u);
    nm_pkt_u8(w, 1);
    nm_pkt_u8(w, 0);
    nm_pkt_u32(w, 12);
}
static void pl_edge_fall(nm_writer_t *w)
{
    nm_pkt_u32(w, 500);
    nm_pkt_u8(w, 0);
    nm_pkt_u8(w, 3);
    nm_pkt_u32(w, 13);
}
static void pl_status(nm_writer_t *w)
{
    nm_pkt_u16(w, 3712);
    nm_pkt_u8(w, 81);
    nm_pkt_u8(w, 5);
    nm_pkt_u32(w, 2);
    nm_pkt_u32(w, 96);
    nm_pkt_u32(w, 1);
}
static void pl_sync(nm_writer_t *w)
{
    nm_pkt_u32(w, 7);
    nm_pkt_u32(w, 1000000);
    nm_pkt_u32(w, 1000042);
}
static void put_str(nm_writer_t *w, const char *s)
{
    nm_pkt_u8(w, (uint8_t)strlen(s));
    nm_pkt_bytes(w, (const uint8_t *)s, (uint16_t)strlen(s));
}
static void pl_identify(nm_writer_t *w)
{
    nm_pkt_u8(w, NM_CMD_IDENTIFY);
    nm_pkt_u8(w, NM_ST_OK);
    put_str(w, "nmcore-ref");
    nm_pkt_u8(w, 1);
    nm_pkt_u8(w, 2);
    nm_pkt_u8(w, 3);
    nm_pkt_u8(w, NM_PROTOCOL_VERSION);
    nm_pkt_u8(w, 2);
    nm_pkt_u8(w, 0);
    nm_pkt_u8(w, NM_KIND_EMG);
    nm_pkt_u8(w, NM_FMT_I24);
    nm_pkt_u8(w, 16);
    nm_pkt_u16(w, 32);
    nm_pkt_u32(w, 2000);
    nm_pkt_f32(w, 1.9073486328125e-08f);
    put_str(w, "V");
    nm_pkt_u8(w, 3);
    nm_pkt_u8(w, NM_KIND_TRIGGER);
    nm_pkt_u8(w, NM_FMT_NONE);
    nm_pkt_u8(w, 1);
    nm_pkt_u16(w, 0);
    nm_pkt_u32(w, 0);
    nm_pkt_f32(w, 1.0f);
    put_str(w, "");
}
static void pl_start_ok(nm_writer_t *w)
{
    nm_pkt_u8(w, NM_CMD_START);
    nm_pkt_u8(w, NM_ST_OK);
    nm_pkt_u8(w, 0x07);
}
static void pl_stop_ok(nm_writer_t *w)
{
    nm_pkt_u8(w, NM_CMD_STOP);
    nm_pkt_u8(w, NM_ST_OK);
    nm_pkt_u8(w, 0x06);
}
static void pl_rate_ok(nm_writer_t *w)
{
    nm_pkt_u8(w, NM_CMD_SET_RATE);
    nm_pkt_u8(w, NM_ST_OK);
    nm_pkt_u32(w, 4000);
}
static void pl_rate_bad(nm_writer_t *w)
{
    nm_pkt_u8(w, NM_CMD_SET_RATE);
    nm_pkt_u8(w, NM_ST_BAD_ARGUMENT);
}
static void pl_loop_ok(nm_writer_t *w)
{
    nm_pkt_u8(w, NM_CMD_LOOPBACK_TRIGGER);
    nm_pkt_u8(w, NM_ST_OK);
    nm_pkt_u32(w, 2000000000u);
}
static void pl_ping_ok(nm_writer_t *w)
{
    nm_pkt_u8(w, NM_CMD_TIME_SYNC_PING);
    nm_pkt_u8(w, NM_ST_OK);
}
static void pl_unknown(nm_writer_t *w)
{
    nm_pkt_u8(w, 0x9F);
    nm_pkt_u8(w, NM_ST_UNKNOWN_COMMAND);
}
static void pl_status_future(nm_writer_t *w)
{
    pl_status(w);
    nm_pkt_u32(w, 0xDEADBEEFu); /* a field a later minor revision appended: ignored */
}

static void event_vec(const char *name, uint8_t ptype, uint8_t stream, uint32_t counter,
                      uint32_t t_us, payload_fn fn, const char *fields_json)
{
    uint8_t body[256];
    nm_header_t h;
    const uint8_t *p;
    uint16_t plen, n = build(body, sizeof body, ptype, stream, counter, t_us, fn);
    begin_vec(name);
    if (frame_and_header(body, n, &h, &p, &plen) != NM_PARSE_OK) return;
    fprintf(out, ",\n     \"fields\": %s}", fields_json);
}

static void gen_events(const char *dir)
{
    open_file(dir, "events.json", "Device-to-host packets without samples; fields as the Python decoder names them.");
    event_vec("trigger_edge_rising", NM_PT_TRIGGER_EDGE, 3, 12, 4294967295u, pl_edge,
              "{\"edge_us\": 4294967295, \"polarity\": 1, \"line\": 0, \"edge_counter\": 12}");
    event_vec("trigger_edge_falling", NM_PT_TRIGGER_EDGE, 3, 13, 500, pl_edge_fall,
              "{\"edge_us\": 500, \"polarity\": 0, \"line\": 3, \"edge_counter\": 13}");
    event_vec("status", NM_PT_STATUS, 0, 4, 10000000, pl_status,
              "{\"battery_mv\": 3712, \"battery_pct\": 81, \"running_mask\": 5, \"buffer_overruns\": 2, "
              "\"dropped_samples\": 96, \"rx_bad_frames\": 1}");
    event_vec("status_with_appended_field", NM_PT_STATUS, 0, 5, 11000000, pl_status_future,
              "{\"battery_mv\": 3712, \"battery_pct\": 81, \"running_mask\": 5, \"buffer_overruns\": 2, "
              "\"dropped_samples\": 96, \"rx_bad_frames\": 1}");
    event_vec("time_sync_reply", NM_PT_TIME_SYNC_REPLY, 0, 7, 1000042, pl_sync,
              "{\"host_seq\": 7, \"rx_us\": 1000000, \"tx_us\": 1000042}");
    event_vec("reply_identify", NM_PT_COMMAND_REPLY, 0, 1, 20, pl_identify,
              "{\"command\": \"identify\", \"command_code\": 128, \"status\": \"ok\", \"device_id\": \"nmcore-ref\", "
              "\"firmware_version\": [1, 2, 3], \"protocol_version\": 1, \"streams\": ["
              "{\"stream_id\": 0, \"kind\": \"emg\", \"sample_format\": \"i24\", \"channel_count\": 16, "
              "\"samples_per_packet\": 32, \"rate_hz\": 2000, \"scale\": 1.9073486328125e-08, \"unit\": \"V\"}, "
              "{\"stream_id\": 3, \"kind\": \"trigger\", \"sample_format\": \"none\", \"channel_count\": 1, "
              "\"samples_per_packet\": 0, \"rate_hz\": 0, \"scale\": 1.0, \"unit\": \"\"}]}");
    event_vec("reply_start", NM_PT_COMMAND_REPLY, 0, 2, 30, pl_start_ok,
              "{\"command\": \"start\", \"command_code\": 129, \"status\": \"ok\", \"running_mask\": 7}");
    event_vec("reply_stop", NM_PT_COMMAND_REPLY, 0, 3, 40, pl_stop_ok,
              "{\"command\": \"stop\", \"command_code\": 130, \"status\": \"ok\", \"running_mask\": 6}");
    event_vec("reply_set_rate", NM_PT_COMMAND_REPLY, 0, 4, 50, pl_rate_ok,
              "{\"command\": \"set_rate\", \"command_code\": 131, \"status\": \"ok\", \"rate_hz\": 4000}");
    event_vec("reply_set_rate_bad_argument", NM_PT_COMMAND_REPLY, 0, 5, 60, pl_rate_bad,
              "{\"command\": \"set_rate\", \"command_code\": 131, \"status\": \"bad_argument\"}");
    event_vec("reply_loopback_trigger", NM_PT_COMMAND_REPLY, 0, 6, 70, pl_loop_ok,
              "{\"command\": \"loopback_trigger\", \"command_code\": 133, \"status\": \"ok\", \"output_us\": 2000000000}");
    event_vec("reply_time_sync_ping_ok", NM_PT_COMMAND_REPLY, 0, 8, 75, pl_ping_ok,
              "{\"command\": \"time_sync_ping\", \"command_code\": 132, \"status\": \"ok\"}");
    event_vec("reply_unknown_command", NM_PT_COMMAND_REPLY, 0, 9, 80, pl_unknown,
              "{\"command\": \"unknown\", \"command_code\": 159, \"status\": \"unknown_command\"}");
    close_file();
}

static void cmd_vec(const char *name, nm_cmd_t c, const char *fields_json)
{
    uint8_t body[64];
    nm_header_t h;
    const uint8_t *p;
    uint16_t plen, n = nm_cmd_build(&c, body, sizeof body);
    begin_vec(name);
    if (frame_and_header(body, n, &h, &p, &plen) != NM_PARSE_OK) return;
    fprintf(out, ",\n     \"fields\": %s}", fields_json);
}

static void gen_commands(const char *dir)
{
    nm_cmd_t c;
    open_file(dir, "commands.json", "Host-to-device commands; header counter is the host sequence number.");
    memset(&c, 0, sizeof c);
    c.type = NM_CMD_IDENTIFY;
    c.seq = 1;
    cmd_vec("identify", c, "{}");
    c.type = NM_CMD_START;
    c.seq = 2;
    c.stream_mask = 0xFF;
    cmd_vec("start_all", c, "{\"stream_mask\": 255}");
    c.type = NM_CMD_STOP;
    c.seq = 3;
    c.stream_mask = 0x01;
    cmd_vec("stop_emg", c, "{\"stream_mask\": 1}");
    c.type = NM_CMD_SET_RATE;
    c.seq = 4;
    c.stream_id = 0;
    c.rate_hz = 4000;
    cmd_vec("set_rate_4000", c, "{\"rate_hz\": 4000}");
    c.type = NM_CMD_TIME_SYNC_PING;
    c.seq = 0xFFFFFFFFu;
    c.stream_id = 0;
    cmd_vec("time_sync_ping", c, "{}");
    c.type = NM_CMD_LOOPBACK_TRIGGER;
    c.seq = 6;
    c.pulse_us = 1000;
    cmd_vec("loopback_trigger", c, "{\"pulse_us\": 1000}");
    close_file();
}

static void bad_vec(const char *name, const uint8_t *wire, size_t n, const char *rejection)
{
    begin_vec(name);
    fprintf(out, ",\n     \"frame_hex\": ");
    hex(wire, n);
    fprintf(out, ",\n     \"rejection\": \"%s\"}", rejection);
}

/* Re-encodes a body with a correct CRC after edits. */
static size_t reframe(uint8_t *body, uint16_t n, uint8_t *wire)
{
    uint16_t crc = nm_crc16_update(NM_CRC16_INIT, body, (size_t)n - 2u);
    body[n - 2] = (uint8_t)crc;
    body[n - 1] = (uint8_t)(crc >> 8);
    return nm_frame_encode(body, n, wire);
}

static void gen_malformed(const char *dir)
{
    uint8_t body[256], wire[300];
    uint16_t n;
    size_t m;
    open_file(dir, "malformed.json",
              "Frames every decoder must reject and count; rejection names the counter.");
    n = build(body, sizeof body, NM_PT_STATUS, 0, 1, 2, pl_status);
    body[20] ^= 0x10;
    m = nm_frame_encode(body, n, wire);
    bad_vec("bad_crc_payload_bit", wire, m, "bad_crc");
    body[20] ^= 0x10;
    body[n - 1] ^= 0xFF;
    m = nm_frame_encode(body, n, wire);
    bad_vec("bad_crc_crc_byte", wire, m, "bad_crc");
    body[n - 1] ^= 0xFF;
    m = nm_frame_encode(body, n, wire);
    wire[0] = (uint8_t)(m + 5); /* the first code byte points past the delimiter */
    bad_vec("bad_cobs_code_past_end", wire, m, "bad_cobs");
    m = nm_frame_encode(body, 10, wire);
    bad_vec("truncated_short_body", wire, m, "truncated");
    {
        const uint8_t tiny[] = {0x01, 0x00};
        bad_vec("truncated_empty_body", tiny, 2, "truncated");
    }
    n = build(body, sizeof body, NM_PT_STATUS, 0, 1, 2, pl_status);
    body[0] = 2;
    m = reframe(body, n, wire);
    bad_vec("bad_version_2", wire, m, "bad_version");
    body[0] = 1;
    body[1] = 0x42;
    m = reframe(body, n, wire);
    bad_vec("unknown_type_0x42", wire, m, "unknown_type");
    body[1] = NM_PT_STATUS;
    n = (uint16_t)(n - 4); /* status payload cut to 12 bytes, CRC still right */
    m = reframe(body, n, wire);
    bad_vec("truncated_status_payload", wire, m, "truncated");
    {
        int32_t v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        nm_writer_t w;
        nm_header_t h = {1, NM_PT_EMG, 0, 0, 0, 0, 0, 2, NM_FMT_I16};
        uint8_t i;
        nm_pkt_begin(&w, body, sizeof body, &h);
        for (i = 0; i < 8; i++) nm_pkt_sample(&w, NM_FMT_I16, v[i]);
        n = nm_pkt_finish(&w, 5); /* header says 5 samples, carries 4 */
        m = nm_frame_encode(body, n, wire);
        bad_vec("truncated_sample_count_mismatch", wire, m, "truncated");
        nm_pkt_begin(&w, body, sizeof body, &h);
        for (i = 0; i < 8; i++) nm_pkt_sample(&w, NM_FMT_I16, v[i]);
        n = nm_pkt_finish(&w, 4);
        body[15] = 9; /* no such sample format */
        m = reframe(body, n, wire);
        bad_vec("truncated_unknown_sample_format", wire, m, "truncated");
    }
    close_file();
}

static void gen_script(const char *dir, const char *bin_path)
{
    static uint8_t data[1u << 16];
    FILE *f = fopen(bin_path, "rb");
    size_t n, i;
    unsigned counts[256];
    if (!f) {
        perror(bin_path);
        exit(1);
    }
    n = fread(data, 1, sizeof data, f);
    fclose(f);
    memset(counts, 0, sizeof counts);
    {
        static uint8_t body[NM_MAX_BODY + 16];
        size_t start = 0;
        for (i = 0; i < n; i++) {
            long k;
            nm_header_t h;
            const uint8_t *p;
            uint16_t plen;
            if (data[i] != 0) continue;
            k = nm_cobs_decode(data + start, i - start, body, sizeof body);
            if (k < 0 || nm_parse_body(body, (size_t)k, &h, &p, &plen) != NM_PARSE_OK) {
                fprintf(stderr, "gen_vectors: the script session holds a bad frame at %lu\n",
                        (unsigned long)start);
                errors++;
            } else {
                counts[h.ptype]++;
            }
            start = i + 1;
        }
    }
    open_file(dir, "script_session.json",
              "The scripted test session (nm-fw-host --script; the AVR build in simavr emits the same bytes).");
    begin_vec("script_session");
    fprintf(out, ",\n     \"stream_hex\": ");
    hex(data, n);
    fprintf(out, ",\n     \"packet_counts\": {");
    {
        int firstc = 1;
        for (i = 0; i < 256; i++) {
            if (!counts[i]) continue;
            fprintf(out, "%s\"%s\": %u", firstc ? "" : ", ", ptype_name((uint8_t)i), counts[i]);
            firstc = 0;
        }
    }
    fprintf(out, "}}");
    close_file();
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gen_vectors OUT_DIR HOST_SCRIPT_BIN\n");
        return 2;
    }
    gen_samples(argv[1]);
    gen_events(argv[1]);
    gen_commands(argv[1]);
    gen_malformed(argv[1]);
    gen_script(argv[1], argv[2]);
    return errors ? 1 : 0;
}
