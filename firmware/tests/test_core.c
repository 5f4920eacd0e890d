/* Unit tests of the portable core: COBS, CRC, encoder, body parser, command parser (with
 * malformed input) and the device's command handling, over the stub HAL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cobs.h"
#include "command.h"
#include "crc16.h"
#include "device.h"
#include "hal_stub.h"
#include "packet.h"

static int failures, checks;
#define CHECK(cond)                                                              \
    do {                                                                         \
        checks++;                                                                \
        if (!(cond)) {                                                           \
            failures++;                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

static uint32_t rng = 12345u;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static void test_crc(void)
{
    const uint8_t check[] = "123456789";
    CHECK(nm_crc16_update(NM_CRC16_INIT, check, 9) == 0x29B1u);
    CHECK(nm_crc16_update(NM_CRC16_INIT, check, 0) == 0xFFFFu);
    /* Incremental equals one-shot. */
    CHECK(nm_crc16_update(nm_crc16_update(NM_CRC16_INIT, check, 4), check + 4, 5) == 0x29B1u);
}

static void cobs_roundtrip(const uint8_t *src, size_t n)
{
    static uint8_t enc[4096], dec[4096];
    size_t m = nm_cobs_encode(src, n, enc);
    size_t i;
    int zero = 0;
    long k;
    CHECK(m <= NM_COBS_MAX_ENCODED(n));
    for (i = 0; i < m; i++) zero |= enc[i] == 0;
    CHECK(!zero);
    k = nm_cobs_decode(enc, m, dec, sizeof dec);
    CHECK(k == (long)n);
    CHECK(k < 0 || memcmp(src, dec, n) == 0);
}

static void test_cobs(void)
{
    static uint8_t buf[2000];
    const uint8_t known_in[] = {0x11, 0x22, 0x00, 0x33};
    const uint8_t known_out[] = {0x03, 0x11, 0x22, 0x02, 0x33};
    uint8_t out[16], dec[16];
    size_t n, i, trial;
    /* Published example (Cheshire & Baker). */
    CHECK(nm_cobs_encode(known_in, 4, out) == 5 && memcmp(out, known_out, 5) == 0);
    CHECK(nm_cobs_encode(known_in, 0, out) == 1 && out[0] == 1);
    /* Boundaries around the 254-byte block. */
    for (n = 250; n < 520; n++) {
        for (i = 0; i < n; i++) buf[i] = (uint8_t)(1 + i % 255);
        cobs_roundtrip(buf, n);
        memset(buf, 0, n);
        cobs_roundtrip(buf, n);
    }
    for (trial = 0; trial < 2000; trial++) {
        n = rnd() % 1600;
        for (i = 0; i < n; i++) buf[i] = (rnd() % 4 == 0) ? 0 : (uint8_t)rnd();
        cobs_roundtrip(buf, n);
    }
    /* Malformed: an embedded zero, a code byte pointing past the end, a too-small output. */
    {
        const uint8_t zero_in[] = {0x03, 0x11, 0x00};
        const uint8_t past_end[] = {0x05, 0x11, 0x22};
        const uint8_t zero_code[] = {0x00};
        CHECK(nm_cobs_decode(zero_in, 3, dec, sizeof dec) == -1);
        CHECK(nm_cobs_decode(past_end, 3, dec, sizeof dec) == -1);
        CHECK(nm_cobs_decode(zero_code, 1, dec, sizeof dec) == -1);
        CHECK(nm_cobs_decode(known_out, 5, dec, 3) == -1);
    }
}

static uint16_t make_sample_body(uint8_t *body, uint16_t cap, uint8_t fmt, uint8_t ch, uint16_t ns)
{
    nm_writer_t w;
    nm_header_t h = {NM_PROTOCOL_VERSION, NM_PT_EMG, 0x80, 5, 0xFFFFFFFEu, 0x01020304u, 0, 0, 0};
    uint16_t s;
    uint8_t c;
    h.channel_count = ch;
    h.sample_format = fmt;
    nm_pkt_begin(&w, body, cap, &h);
    for (s = 0; s < ns; s++)
        for (c = 0; c < ch; c++) nm_pkt_sample(&w, fmt, (int32_t)(s * 1000 - c * 77));
    return nm_pkt_finish(&w, ns);
}

static void test_encoder_and_parser(void)
{
    static uint8_t body[NM_MAX_BODY + 8];
    nm_header_t h;
    const uint8_t *p;
    uint16_t plen, n;
    n = make_sample_body(body, sizeof body, NM_FMT_I24, 3, 4);
    CHECK(n == NM_HEADER_SIZE + 3 * 4 * 3 + NM_CRC_SIZE);
    /* Header layout, little-endian. */
    CHECK(body[0] == 1 && body[1] == NM_PT_EMG && body[2] == 0x80 && body[3] == 5);
    CHECK(body[4] == 0xFE && body[7] == 0xFF && body[8] == 0x04 && body[11] == 0x01);
    CHECK(body[12] == 4 && body[13] == 0 && body[14] == 3 && body[15] == NM_FMT_I24);
    CHECK(nm_get_u16(body + n - 2) == nm_crc16_update(NM_CRC16_INIT, body, (size_t)n - 2));
    CHECK(nm_parse_body(body, n, &h, &p, &plen) == NM_PARSE_OK);
    CHECK(h.counter == 0xFFFFFFFEu && h.device_us == 0x01020304u && h.sample_count == 4);
    CHECK(plen == 36 && nm_get_i24(p + 3) == -77 && nm_get_i24(p + 9) == 1000);
    /* i16 wraps to two's complement, f32 in 1/1024 units. */
    n = make_sample_body(body, sizeof body, NM_FMT_F32, 1, 2);
    CHECK(nm_parse_body(body, n, &h, &p, &plen) == NM_PARSE_OK);
    CHECK(nm_get_f32(p + 4) == 1000.0f / 1024.0f);
    /* Too large a payload fails at finish instead of overrunning the buffer. */
    CHECK(make_sample_body(body, sizeof body, NM_FMT_I32, 16, 32) == 0);
    CHECK(make_sample_body(body, 40, NM_FMT_I32, 16, 2) == 0);
    /* Malformed bodies. */
    n = make_sample_body(body, sizeof body, NM_FMT_I16, 2, 3);
    CHECK(nm_parse_body(body, 17, &h, &p, &plen) == NM_PARSE_TRUNCATED);
    body[20] ^= 0x40;
    CHECK(nm_parse_body(body, n, &h, &p, &plen) == NM_PARSE_BAD_CRC);
    body[20] ^= 0x40;
    CHECK(nm_parse_body(body, n - 1, &h, &p, &plen) == NM_PARSE_BAD_CRC);
    {
        /* Wrong version / unknown type / sample length disagreeing with the header: re-CRC. */
        uint16_t crc;
        body[0] = 2;
        crc = nm_crc16_update(NM_CRC16_INIT, body, (size_t)n - 2);
        body[n - 2] = (uint8_t)crc;
        body[n - 1] = (uint8_t)(crc >> 8);
        CHECK(nm_parse_body(body, n, &h, &p, &plen) == NM_PARSE_BAD_VERSION);
        body[0] = 1;
        body[1] = 0x42;
        crc = nm_crc16_update(NM_CRC16_INIT, body, (size_t)n - 2);
        body[n - 2] = (uint8_t)crc;
        body[n - 1] = (uint8_t)(crc >> 8);
        CHECK(nm_parse_body(body, n, &h, &p, &plen) == NM_PARSE_UNKNOWN_TYPE);
        body[1] = NM_PT_EMG;
        body[12] = 4; /* says 4 samples, carries 3 */
        crc = nm_crc16_update(NM_CRC16_INIT, body, (size_t)n - 2);
        body[n - 2] = (uint8_t)crc;
        body[n - 1] = (uint8_t)(crc >> 8);
        CHECK(nm_parse_body(body, n, &h, &p, &plen) == NM_PARSE_TRUNCATED);
    }
}

static size_t cmd_frame(const nm_cmd_t *c, uint8_t *frame)
{
    uint8_t body[64];
    uint16_t n = nm_cmd_build(c, body, sizeof body);
    return nm_frame_encode(body, n, frame) - 1; /* without the delimiter */
}

static void test_command_parser(void)
{
    uint8_t frame[80], scratch[80], st;
    nm_cmd_t c = {NM_CMD_SET_RATE, 1, 77, 0, 500, 0}, out;
    size_t n = cmd_frame(&c, frame), i;
    CHECK(nm_cmd_parse(frame, n, scratch, &out, &st) == NM_CMD_OK);
    CHECK(out.type == NM_CMD_SET_RATE && out.stream_id == 1 && out.seq == 77 && out.rate_hz == 500);
    c.type = NM_CMD_LOOPBACK_TRIGGER;
    c.pulse_us = 0;
    n = cmd_frame(&c, frame);
    CHECK(nm_cmd_parse(frame, n, scratch, &out, &st) == NM_CMD_REPLY_ERR && st == NM_ST_BAD_ARGUMENT);
    c.type = 0x9E;
    n = cmd_frame(&c, frame);
    CHECK(nm_cmd_parse(frame, n, scratch, &out, &st) == NM_CMD_REPLY_ERR && st == NM_ST_UNKNOWN_COMMAND);
    c.type = NM_PT_STATUS; /* a device-to-host type sent to the device */
    n = cmd_frame(&c, frame);
    CHECK(nm_cmd_parse(frame, n, scratch, &out, &st) == NM_CMD_REPLY_ERR && st == NM_ST_UNKNOWN_COMMAND);
    {
        /* START without its mask byte: BAD_LENGTH. */
        uint8_t body[32];
        nm_writer_t w;
        nm_header_t h = {1, NM_CMD_START, 0, 0, 9, 0, 0, 0, 0};
        uint16_t bn;
        nm_pkt_begin(&w, body, sizeof body, &h);
        bn = nm_pkt_finish(&w, 0);
        n = nm_frame_encode(body, bn, frame) - 1;
        CHECK(nm_cmd_parse(frame, n, scratch, &out, &st) == NM_CMD_REPLY_ERR && st == NM_ST_BAD_LENGTH);
        /* Version 2: BAD_VERSION reply, not a silent drop. */
        h.version = 2;
        nm_pkt_begin(&w, body, sizeof body, &h);
        nm_pkt_u8(&w, 1);
        bn = nm_pkt_finish(&w, 0);
        n = nm_frame_encode(body, bn, frame) - 1;
        CHECK(nm_cmd_parse(frame, n, scratch, &out, &st) == NM_CMD_REPLY_ERR && st == NM_ST_BAD_VERSION);
    }
    /* Every single-byte corruption of a valid command is dropped or answered, never accepted
     * as a different valid command with a good CRC (CRC-16 catches all single-byte errors). */
    c.type = NM_CMD_START;
    c.stream_mask = 3;
    n = cmd_frame(&c, frame);
    for (i = 0; i < n; i++) {
        uint8_t orig = frame[i];
        unsigned v;
        for (v = 1; v < 256; v++) {
            frame[i] = (uint8_t)(orig ^ v);
            CHECK(nm_cmd_parse(frame, n, scratch, &out, &st) == NM_CMD_DROP);
        }
        frame[i] = orig;
    }
    /* Random garbage never crashes and is almost always dropped. */
    for (i = 0; i < 20000; i++) {
        size_t k, len = 1 + rnd() % 40;
        for (k = 0; k < len; k++) frame[k] = (uint8_t)rnd();
        (void)nm_cmd_parse(frame, len, scratch, &out, &st);
    }
}

/* Splits the stub output into frames and parses each. Returns the number of frames. */
static int parse_output(nm_header_t *hs, int max, uint8_t payloads[][200])
{
    size_t i, start = 0;
    int k = 0;
    static uint8_t body[NM_MAX_BODY + 16];
    for (i = 0; i < stub_out_len; i++) {
        if (stub_out[i] != 0) continue;
        {
            long m = nm_cobs_decode(stub_out + start, i - start, body, sizeof body);
            const uint8_t *p;
            uint16_t plen;
            CHECK(m > 0);
            if (m > 0 && k < max) {
                CHECK(nm_parse_body(body, (size_t)m, &hs[k], &p, &plen) == NM_PARSE_OK);
                memcpy(payloads[k], p, plen < 200 ? plen : 200);
                k++;
            }
        }
        start = i + 1;
    }
    return k;
}

static void feed(const nm_cmd_t *c)
{
    static uint8_t frame[80];
    size_t n = cmd_frame(c, frame);
    frame[n++] = 0;
    stub_in = frame;
    stub_in_len = n;
    nm_device_poll();
}

static void test_device(void)
{
    static uint8_t emg[NM_MAX_BODY], imu[256], force[256];
    uint8_t *const bufs[3] = {emg, imu, force};
    const uint16_t caps[3] = {sizeof emg, sizeof imu, sizeof force};
    nm_device_cfg_t cfg = {"unit", 1, 2, 3, 1, 1000000u, 0};
    nm_header_t hs[64];
    static uint8_t pl[64][200];
    nm_cmd_t c;
    int k, i, edges = 0;
    memset(&c, 0, sizeof c);
    stub_now_us = 0xFFFFFF00u; /* cross the clock wrap */
    stub_out_len = 0;
    nm_device_init(&cfg, nm_default_streams, bufs, caps);
    nm_device_poll(); /* boot status */
    c.type = NM_CMD_TIME_SYNC_PING;
    c.seq = 41;
    stub_now_us += 100;
    feed(&c);
    c.type = NM_CMD_START;
    c.seq = 42;
    c.stream_mask = 0x04; /* force only: 1 kHz, 10 per packet */
    feed(&c);
    for (i = 0; i < 25; i++) {
        stub_now_us += 1000;
        nm_device_poll();
    }
    c.type = NM_CMD_LOOPBACK_TRIGGER;
    c.seq = 43;
    c.pulse_us = 300;
    feed(&c);
    stub_now_us += 300;
    nm_device_poll();
    /* A late scheduler: 20 ms of silence must be skipped and counted, not back-filled. */
    stub_now_us += 20000;
    nm_device_poll();
    k = parse_output(hs, 64, pl);
    CHECK(hs[0].ptype == NM_PT_STATUS);
    CHECK(hs[1].ptype == NM_PT_TIME_SYNC_REPLY && nm_get_u32(pl[1]) == 41 &&
          nm_get_u32(pl[1] + 4) == 0xFFFFFF64u);
    CHECK(hs[2].ptype == NM_PT_COMMAND_REPLY && pl[2][0] == NM_CMD_START && pl[2][1] == 0 &&
          pl[2][2] == 0x04);
    CHECK(hs[3].ptype == NM_PT_FORCE && hs[3].counter == 0 && hs[3].sample_count == 10 &&
          hs[3].device_us == 0xFFFFFF64u);
    CHECK(hs[4].ptype == NM_PT_FORCE && hs[4].counter == 10 &&
          hs[4].device_us == 0xFFFFFF64u + 10000u);
    for (i = 0; i < k; i++) {
        if (hs[i].ptype == NM_PT_TRIGGER_EDGE) {
            CHECK(pl[i][4] == (edges == 0 ? 1 : 0));
            CHECK(nm_get_u32(pl[i] + 6) == (uint32_t)edges);
            edges++;
        }
        if (hs[i].ptype == NM_PT_FORCE && hs[i].counter > 30) {
            CHECK(hs[i].flags & NM_FLAG_DISCONTINUITY);
        }
    }
    CHECK(edges == 2);
    CHECK(nm_device_counters().dropped_samples > 0);
}

int main(void)
{
    test_crc();
    test_cobs();
    test_encoder_and_parser();
    test_command_parser();
    test_device();
    printf("test_core: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
