/* nmcore serial wire protocol, version 1: constants shared by every build.
 * The normative description is firmware/PROTOCOL.md; keep the two in step. */
#ifndef NM_PROTOCOL_H
#define NM_PROTOCOL_H

#include <stdint.h>

#define NM_PROTOCOL_VERSION 1u

/* Frame body = header (16) + payload + CRC (2). */
#define NM_HEADER_SIZE 16u
#define NM_CRC_SIZE 2u
/* 16 channels x 32 samples x 3 bytes (i24): the largest block a device sends. */
#define NM_MAX_PAYLOAD 1536u
#define NM_MAX_BODY (NM_HEADER_SIZE + NM_MAX_PAYLOAD + NM_CRC_SIZE)
/* COBS adds one code byte per 254 data bytes (and one at the start), plus the 0x00 delimiter. */
#define NM_COBS_MAX_ENCODED(n) ((n) + ((n) / 254u) + 1u)
#define NM_MAX_WIRE (NM_COBS_MAX_ENCODED(NM_MAX_BODY) + 1u)

/* Device-to-host packet types. */
enum nm_ptype {
    NM_PT_EMG = 0x01,
    NM_PT_IMU = 0x02,
    NM_PT_FORCE = 0x03,
    NM_PT_TRIGGER_EDGE = 0x10,
    NM_PT_STATUS = 0x11,
    NM_PT_COMMAND_REPLY = 0x20,
    NM_PT_TIME_SYNC_REPLY = 0x21,
    /* Host-to-device commands. */
    NM_CMD_IDENTIFY = 0x80,
    NM_CMD_START = 0x81,
    NM_CMD_STOP = 0x82,
    NM_CMD_SET_RATE = 0x83,
    NM_CMD_TIME_SYNC_PING = 0x84,
    NM_CMD_LOOPBACK_TRIGGER = 0x85
};

/* Sample formats; width in bytes per value. */
enum nm_format {
    NM_FMT_NONE = 0,
    NM_FMT_I16 = 1,
    NM_FMT_I24 = 2,
    NM_FMT_I32 = 3,
    NM_FMT_F32 = 4
};

/* Header flags. */
#define NM_FLAG_DISCONTINUITY 0x01u /* samples were lost on the device before this packet */
#define NM_FLAG_SATURATED 0x02u     /* at least one value sits at the converter's rail */
#define NM_FLAG_SIMULATED 0x80u     /* values come from a simulated or scripted source */

/* Command reply status codes. */
enum nm_status {
    NM_ST_OK = 0,
    NM_ST_UNKNOWN_COMMAND = 1,
    NM_ST_BAD_ARGUMENT = 2,
    NM_ST_BAD_LENGTH = 3,
    NM_ST_BAD_STATE = 4,
    NM_ST_BAD_VERSION = 5
};

/* Stream kinds in the identify reply (same numbering as the sample packet types). */
#define NM_KIND_EMG 1u
#define NM_KIND_IMU 2u
#define NM_KIND_FORCE 3u
#define NM_KIND_TRIGGER 4u

#define NM_MAX_RATE_HZ 10000u
#define NM_MAX_DEVICE_ID 32u
#define NM_MAX_UNIT 8u

/* Payload sizes of the fixed-layout packets. */
#define NM_TRIGGER_EDGE_PAYLOAD 10u
#define NM_STATUS_PAYLOAD 16u
#define NM_TIME_SYNC_REPLY_PAYLOAD 12u

typedef struct {
    uint8_t version;
    uint8_t ptype;
    uint8_t flags;
    uint8_t stream_id;
    uint32_t counter;
    uint32_t device_us;
    uint16_t sample_count;
    uint8_t channel_count;
    uint8_t sample_format;
} nm_header_t;

uint8_t nm_format_width(uint8_t fmt);

#endif
