/* The device core: streams, a tiny cooperative scheduler, command handling, time sync,
 * trigger edges and status. Portable C99 over hal.h. */
#ifndef NM_DEVICE_H
#define NM_DEVICE_H
#include <stdint.h>
#include "nm_protocol.h"
#include "packet.h"

#define NM_N_SAMPLED_STREAMS 3u
#define NM_TRIGGER_STREAM_ID 3u
#define NM_EDGE_RING 8u /* edges buffered between the interrupt and the main loop */
#define NM_RX_MAX 64u   /* longest command frame accepted (COBS-encoded, without delimiter) */
#define NM_DEV_MAX_CHANNELS 16u /* per sampled stream on this firmware (the protocol allows 255) */

typedef struct {
    uint8_t stream_id;
    uint8_t kind;
    uint8_t ptype;
    uint8_t format;
    uint8_t channels;
    uint16_t samples_per_packet;
    uint32_t rate_hz;
    float scale; /* physical units per count */
    const char *unit;
} nm_stream_cfg_t;

typedef struct {
    nm_stream_cfg_t cfg;
    uint8_t *buf;
    uint16_t buf_cap;
    uint8_t running;
    uint8_t pending_flags;
    uint32_t period_us;
    uint32_t next_due_us;
    uint32_t counter; /* sample counter of the next sample */
    uint16_t n_in_packet;
    nm_writer_t w;
} nm_stream_t;

typedef struct {
    const char *device_id;
    uint8_t fw_major, fw_minor, fw_patch;
    uint32_t seed;
    uint32_t status_period_us;
    uint8_t flags; /* ORed into every header (NM_FLAG_SIMULATED for simulated sources) */
} nm_device_cfg_t;

/* Stream table defaults, shared by both builds so the scripted test mode matches. */
extern const nm_stream_cfg_t nm_default_streams[NM_N_SAMPLED_STREAMS];

void nm_device_init(const nm_device_cfg_t *cfg, const nm_stream_cfg_t *streams,
                    uint8_t *const *buffers, const uint16_t *buf_caps);
/* Handles input, due samples, edges, status. Call in a loop with hal_wait_until(next). */
void nm_device_poll(void);
/* Clock value of the next scheduled event (at most 10 ms ahead, so input is polled). */
uint32_t nm_device_next_due_us(void);
/* Starts the streams in mask as if a START command had arrived (host --autostart). */
void nm_device_start(uint8_t mask);

/* Counters reported in the status packet. */
typedef struct {
    uint32_t buffer_overruns;
    uint32_t dropped_samples;
    uint32_t rx_bad_frames;
} nm_device_counters_t;
nm_device_counters_t nm_device_counters(void);

/* Deterministic simulated value: a pure function of (seed, stream, channel, counter). */
int32_t nm_sim_value(uint32_t seed, uint8_t stream_id, uint8_t channel, uint32_t counter);
#endif
