/* Host-to-device command parser. */
#ifndef NM_COMMAND_H
#define NM_COMMAND_H
#include <stddef.h>
#include <stdint.h>
#include "nm_protocol.h"

typedef struct {
    uint8_t type;
    uint8_t stream_id;
    uint32_t seq;        /* header counter: the host's sequence number, echoed in the reply */
    uint8_t stream_mask; /* START/STOP */
    uint32_t rate_hz;    /* SET_RATE */
    uint16_t pulse_us;   /* LOOPBACK_TRIGGER */
} nm_cmd_t;

enum nm_cmd_result {
    NM_CMD_OK = 0,       /* cmd filled: execute and reply */
    NM_CMD_REPLY_ERR = 1, /* well-formed frame, bad content: reply with *status */
    NM_CMD_DROP = 2      /* corrupt frame (COBS, CRC, length): count, no reply */
};

/* Parses one COBS-encoded frame (without its 0x00). scratch holds n bytes. */
int nm_cmd_parse(const uint8_t *frame, size_t n, uint8_t *scratch, nm_cmd_t *cmd, uint8_t *status);

/* Builds a command body (for the host-side tools, tests and the test script). Returns length. */
uint16_t nm_cmd_build(const nm_cmd_t *cmd, uint8_t *body, uint16_t cap);
#endif
