#include "command.h"
#include "cobs.h"
#include "packet.h"

int nm_cmd_parse(const uint8_t *frame, size_t n, uint8_t *scratch, nm_cmd_t *cmd, uint8_t *status)
{
    nm_header_t h = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    const uint8_t *p = 0;
    uint16_t plen = 0;
    long m = nm_cobs_decode(frame, n, scratch, n);
    int r;
    if (m < 0) {
        return NM_CMD_DROP;
    }
    r = nm_parse_body(scratch, (size_t)m, &h, &p, &plen);
    if (r == NM_PARSE_BAD_CRC || (r == NM_PARSE_TRUNCATED && h.ptype >= NM_CMD_IDENTIFY)) {
        return NM_CMD_DROP;
    }
    if (r == NM_PARSE_TRUNCATED) {
        /* Too short for any header, or a device-to-host type failing its own length rule. */
        if ((size_t)m < NM_HEADER_SIZE + NM_CRC_SIZE) return NM_CMD_DROP;
        r = NM_PARSE_UNKNOWN_TYPE;
    }
    cmd->type = h.ptype;
    cmd->stream_id = h.stream_id;
    cmd->seq = h.counter;
    cmd->stream_mask = 0;
    cmd->rate_hz = 0;
    cmd->pulse_us = 0;
    if (r == NM_PARSE_BAD_VERSION) {
        *status = NM_ST_BAD_VERSION;
        return NM_CMD_REPLY_ERR;
    }
    if (r != NM_PARSE_OK || h.ptype < NM_CMD_IDENTIFY) {
        *status = NM_ST_UNKNOWN_COMMAND;
        return NM_CMD_REPLY_ERR;
    }
    /* Payloads may grow at the end within a protocol version: ignore extra bytes. */
    switch (h.ptype) {
    case NM_CMD_IDENTIFY:
    case NM_CMD_TIME_SYNC_PING:
        break;
    case NM_CMD_START:
    case NM_CMD_STOP:
        if (plen < 1) goto short_payload;
        cmd->stream_mask = p[0];
        break;
    case NM_CMD_SET_RATE:
        if (plen < 4) goto short_payload;
        cmd->rate_hz = nm_get_u32(p);
        break;
    case NM_CMD_LOOPBACK_TRIGGER:
        if (plen < 2) goto short_payload;
        cmd->pulse_us = nm_get_u16(p);
        if (cmd->pulse_us == 0) {
            *status = NM_ST_BAD_ARGUMENT;
            return NM_CMD_REPLY_ERR;
        }
        break;
    default:
        *status = NM_ST_UNKNOWN_COMMAND;
        return NM_CMD_REPLY_ERR;
    }
    *status = NM_ST_OK;
    return NM_CMD_OK;
short_payload:
    *status = NM_ST_BAD_LENGTH;
    return NM_CMD_REPLY_ERR;
}

uint16_t nm_cmd_build(const nm_cmd_t *cmd, uint8_t *body, uint16_t cap)
{
    nm_writer_t w;
    nm_header_t h = {NM_PROTOCOL_VERSION, 0, 0, 0, 0, 0, 0, 0, 0};
    h.ptype = cmd->type;
    h.stream_id = cmd->stream_id;
    h.counter = cmd->seq;
    nm_pkt_begin(&w, body, cap, &h);
    switch (cmd->type) {
    case NM_CMD_START:
    case NM_CMD_STOP: nm_pkt_u8(&w, cmd->stream_mask); break;
    case NM_CMD_SET_RATE: nm_pkt_u32(&w, cmd->rate_hz); break;
    case NM_CMD_LOOPBACK_TRIGGER: nm_pkt_u16(&w, cmd->pulse_us); break;
    default: break;
    }
    return nm_pkt_finish(&w, 0);
}
