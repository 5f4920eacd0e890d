/* Packet encoder and body parser: header + payload + CRC, then COBS + delimiter. */
#ifndef NM_PACKET_H
#define NM_PACKET_H
#include <stddef.h>
#include <stdint.h>
#include "nm_protocol.h"

typedef struct {
    uint8_t *buf;
    uint16_t cap;
    uint16_t len;
    uint8_t overflow; /* a put did not fit; finish then fails */
} nm_writer_t;

/* Starts a body in buf (cap bytes) with the header h (sample_count is patched by finish). */
void nm_pkt_begin(nm_writer_t *w, uint8_t *buf, uint16_t cap, const nm_header_t *h);
void nm_pkt_u8(nm_writer_t *w, uint8_t v);
void nm_pkt_u16(nm_writer_t *w, uint16_t v);
void nm_pkt_u32(nm_writer_t *w, uint32_t v);
void nm_pkt_i24(nm_writer_t *w, int32_t v);
void nm_pkt_f32(nm_writer_t *w, float v);
void nm_pkt_bytes(nm_writer_t *w, const uint8_t *p, uint16_t n);
/* Writes one value in the given sample format. */
void nm_pkt_sample(nm_writer_t *w, uint8_t fmt, int32_t v);
/* Patches sample_count, appends the CRC. Returns the body length, 0 on overflow. */
uint16_t nm_pkt_finish(nm_writer_t *w, uint16_t sample_count);

/* COBS-encodes a body and appends the 0x00 delimiter; out needs NM_COBS_MAX_ENCODED(n)+1. */
size_t nm_frame_encode(const uint8_t *body, size_t n, uint8_t *out);

/* Result of parsing a body (COBS already removed). */
enum nm_parse {
    NM_PARSE_OK = 0,
    NM_PARSE_TRUNCATED = 1,   /* shorter than header + CRC, or payload length disagrees */
    NM_PARSE_BAD_CRC = 2,
    NM_PARSE_BAD_VERSION = 3,
    NM_PARSE_UNKNOWN_TYPE = 4,
    NM_PARSE_BAD_COBS = 5
};

/* Checks length, CRC, version, type and (sample packets) payload length. On success fills h
 * and points payload/payload_len into body. */
int nm_parse_body(const uint8_t *body, size_t n, nm_header_t *h, const uint8_t **payload,
                  uint16_t *payload_len);

uint16_t nm_get_u16(const uint8_t *p);
uint32_t nm_get_u32(const uint8_t *p);
int32_t nm_get_i24(const uint8_t *p);
float nm_get_f32(const uint8_t *p);
int nm_is_sample_type(uint8_t ptype);
int nm_is_known_type(uint8_t ptype);
#endif
