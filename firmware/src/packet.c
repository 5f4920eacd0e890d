#include "packet.h"
#include <string.h>
#include "cobs.h"
#include "crc16.h"

uint8_t nm_format_width(uint8_t fmt)
{
    switch (fmt) {
    case NM_FMT_I16: return 2;
    case NM_FMT_I24: return 3;
    case NM_FMT_I32: return 4;
    case NM_FMT_F32: return 4;
    default: return 0;
    }
}

int nm_is_sample_type(uint8_t ptype)
{
    return ptype == NM_PT_EMG || ptype == NM_PT_IMU || ptype == NM_PT_FORCE;
}

int nm_is_known_type(uint8_t t)
{
    return nm_is_sample_type(t) || t == NM_PT_TRIGGER_EDGE || t == NM_PT_STATUS ||
           t == NM_PT_COMMAND_REPLY || t == NM_PT_TIME_SYNC_REPLY ||
           (t >= NM_CMD_IDENTIFY && t <= NM_CMD_LOOPBACK_TRIGGER);
}

static void put(nm_writer_t *w, uint8_t v)
{
    if (w->len >= w->cap) {
        w->overflow = 1;
        return;
    }
    w->buf[w->len++] = v;
}

void nm_pkt_u8(nm_writer_t *w, uint8_t v) { put(w, v); }

void nm_pkt_u16(nm_writer_t *w, uint16_t v)
{
    put(w, (uint8_t)v);
    put(w, (uint8_t)(v >> 8));
}

void nm_pkt_u32(nm_writer_t *w, uint32_t v)
{
    put(w, (uint8_t)v);
    put(w, (uint8_t)(v >> 8));
    put(w, (uint8_t)(v >> 16));
    put(w, (uint8_t)(v >> 24));
}

void nm_pkt_i24(nm_writer_t *w, int32_t v)
{
    uint32_t u = (uint32_t)v;
    put(w, (uint8_t)u);
    put(w, (uint8_t)(u >> 8));
    put(w, (uint8_t)(u >> 16));
}

void nm_pkt_f32(nm_writer_t *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4); /* IEEE 754 binary32 on both gcc and avr-gcc */
    nm_pkt_u32(w, u);
}

void nm_pkt_bytes(nm_writer_t *w, const uint8_t *p, uint16_t n)
{
    uint16_t i;
    for (i = 0; i < n; i++) put(w, p[i]);
}

void nm_pkt_sample(nm_writer_t *w, uint8_t fmt, int32_t v)
{
    switch (fmt) {
    case NM_FMT_I16: nm_pkt_u16(w, (uint16_t)(int16_t)v); break;
    case NM_FMT_I24: nm_pkt_i24(w, v); break;
    case NM_FMT_I32: nm_pkt_u32(w, (uint32_t)v); break;
    /* Simulated f32 values are integers in 1/1024 units: exact in binary32, so the AVR and
     * host builds produce the same bits. */
    case NM_FMT_F32: nm_pkt_f32(w, (float)v / 1024.0f); break;
    default: w->overflow = 1; break;
    }
}

void nm_pkt_begin(nm_writer_t *w, uint8_t *buf, uint16_t cap, const nm_header_t *h)
{
    w->buf = buf;
    w->cap = (uint16_t)(cap - NM_CRC_SIZE); /* keep room for the CRC */
    w->len = 0;
    w->overflow = 0;
    put(w, h->version);
    put(w, h->ptype);
    put(w, h->flags);
    put(w, h->stream_id);
    nm_pkt_u32(w, h->counter);
    nm_pkt_u32(w, h->device_us);
    nm_pkt_u16(w, h->sample_count);
    put(w, h->channel_count);
    put(w, h->sample_format);
}

uint16_t nm_pkt_finish(nm_writer_t *w, uint16_t sample_count)
{
    uint16_t crc;
    if (w->overflow || w->len < NM_HEADER_SIZE || w->len - NM_HEADER_SIZE > NM_MAX_PAYLOAD) {
        return 0;
    }
    w->buf[12] = (uint8_t)sample_count;
    w->buf[13] = (uint8_t)(sample_count >> 8);
    crc = nm_crc16_update(NM_CRC16_INIT, w->buf, w->len);
    w->buf[w->len++] = (uint8_t)crc;
    w->buf[w->len++] = (uint8_t)(crc >> 8);
    return w->len;
}

size_t nm_frame_encode(const uint8_t *body, size_t n, uint8_t *out)
{
    size_t m = nm_cobs_encode(body, n, out);
    out[m++] = 0;
    return m;
}

uint16_t nm_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }

uint32_t nm_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

int32_t nm_get_i24(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
    if (u & 0x800000u) u |= 0xFF000000u;
    return (int32_t)u;
}

float nm_get_f32(const uint8_t *p)
{
    uint32_t u = nm_get_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int nm_parse_body(const uint8_t *body, size_t n, nm_header_t *h, const uint8_t **payload,
                  uint16_t *payload_len)
{
    uint16_t crc;
    size_t plen;
    if (n < NM_HEADER_SIZE + NM_CRC_SIZE || n > NM_MAX_BODY) {
        return NM_PARSE_TRUNCATED;
    }
    crc = nm_crc16_update(NM_CRC16_INIT, body, n - NM_CRC_SIZE);
    if (nm_get_u16(body + n - NM_CRC_SIZE) != crc) {
        return NM_PARSE_BAD_CRC;
    }
    /* From here the header is trustworthy: fill it even when a later check fails. */
    h->version = body[0];
    h->ptype = body[1];
    h->flags = body[2];
    h->stream_id = body[3];
    h->counter = nm_get_u32(body + 4);
    h->device_us = nm_get_u32(body + 8);
    h->sample_count = nm_get_u16(body + 12);
    h->channel_count = body[14];
    h->sample_format = body[15];
    if (h->version != NM_PROTOCOL_VERSION) {
        return NM_PARSE_BAD_VERSION;
    }
    if (!nm_is_known_type(h->ptype)) {
        return NM_PARSE_UNKNOWN_TYPE;
    }
    plen = n - NM_HEADER_SIZE - NM_CRC_SIZE;
    if (nm_is_sample_type(h->ptype)) {
        uint8_t width = nm_format_width(h->sample_format);
        if (width == 0 || h->channel_count == 0 ||
            (uint32_t)h->sample_count * h->channel_count * width != plen) {
            return NM_PARSE_TRUNCATED;
        }
    } else if ((h->ptype == NM_PT_TRIGGER_EDGE && plen < NM_TRIGGER_EDGE_PAYLOAD) ||
               (h->ptype == NM_PT_STATUS && plen < NM_STATUS_PAYLOAD) ||
               (h->ptype == NM_PT_TIME_SYNC_REPLY && plen < NM_TIME_SYNC_REPLY_PAYLOAD) ||
               (h->ptype == NM_PT_COMMAND_REPLY && plen < 2)) {
        return NM_PARSE_TRUNCATED;
    }
    *payload = body + NM_HEADER_SIZE;
    *payload_len = (uint16_t)plen;
    return NM_PARSE_OK;
}
