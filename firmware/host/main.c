/* Host build of the reference firmware: the portable core over simulated, seeded sensors.
 * Talks COBS frames over stdin/stdout, a serial/pty path (--port) or a pty it creates (--pty).
 * See firmware/README.md for the flags. */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "hal.h"
#include "script.h"

static struct {
    int in_fd, out_fd;
    int in_eof;
    int fast;
    int script;
    double duration_s;
    double drift_ppm;
    double corrupt_rate;
    uint32_t seed;
    uint32_t clock_start_us;
    uint64_t start_ns;
    uint32_t vclock_us;    /* --fast: the device clock is virtual */
    uint64_t elapsed_us;   /* device time since boot, for --duration-s */
    uint32_t last_us;
    uint64_t rng;
    uint8_t loopback_level;
} H;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: the corruption generator, separate from the sample hash. */
static double rng_uniform(void)
{
    H.rng ^= H.rng >> 12;
    H.rng ^= H.rng << 25;
    H.rng ^= H.rng >> 27;
    return (double)((H.rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

uint32_t hal_clock_us(void)
{
    uint32_t t;
    if (H.script) return nm_vclock_us();
    if (H.fast) {
        t = H.vclock_us;
    } else {
        /* A crystal off by drift_ppm: device time runs (1 + ppm*1e-6) times host time. */
        double el_us = (double)(mono_ns() - H.start_ns) / 1000.0 * (1.0 + H.drift_ppm * 1e-6);
        t = H.clock_start_us + (uint32_t)(uint64_t)el_us;
    }
    H.elapsed_us += (uint32_t)(t - H.last_us);
    H.last_us = t;
    return t;
}

void hal_wait_until(uint32_t t_us)
{
    int32_t d;
    if (H.script) {
        nm_vclock_wait_until(t_us);
        return;
    }
    if (H.fast) {
        if ((int32_t)(t_us - H.vclock_us) > 0) H.vclock_us = t_us;
        return;
    }
    d = (int32_t)(t_us - hal_clock_us());
    if (d > 0) {
        struct pollfd p = {H.in_fd, POLLIN, 0};
        int ms = (int)(d / 1000);
        if (H.in_eof || ms == 0) {
            struct timespec ts;
            ts.tv_sec = d / 1000000;
            ts.tv_nsec = (long)(d % 1000000) * 1000;
            nanosleep(&ts, NULL);
        } else {
            (void)poll(&p, 1, ms);
        }
    }
}

void hal_read_channels(uint8_t stream_id, uint32_t counter, uint8_t n, int32_t *out)
{
    uint8_t c;
    for (c = 0; c < n; c++) out[c] = nm_sim_value(H.seed, stream_id, c, counter);
}

size_t hal_uart_read(uint8_t *buf, size_t cap)
{
    struct pollfd p;
    ssize_t r;
    if (H.script) return nm_script_read(buf, cap);
    if (H.in_eof) return 0;
    p.fd = H.in_fd;
    p.events = POLLIN;
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP))) return 0;
    r = read(H.in_fd, buf, cap);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        /* stdin closed or pty peer gone: keep streaming until --duration-s */
        if (H.in_fd == STDIN_FILENO || r == 0) H.in_eof = 1;
        return 0;
    }
    return r < 0 ? 0 : (size_t)r;
}

void hal_uart_write(const uint8_t *buf, size_t n)
{
    static uint8_t tmp[NM_MAX_WIRE];
    size_t off = 0;
    if (H.corrupt_rate > 0 && n > 1 && n <= sizeof tmp && rng_uniform() < H.corrupt_rate) {
        size_t at = (size_t)(rng_uniform() * (double)(n - 1));
        memcpy(tmp, buf, n);
        tmp[at] ^= (uint8_t)(1u + (unsigned)(rng_uniform() * 255.0));
        buf = tmp;
    }
    while (off < n) {
        ssize_t w = write(H.out_fd, buf + off, n - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd p = {H.out_fd, POLLOUT, 0};
                (void)poll(&p, 1, 100);
                continue;
            }
            return; /* reader gone: the frame is lost, like on a real unplugged link */
        }
        off += (size_t)w;
    }
}

void hal_loopback_set(uint8_t level)
{
    /* The loopback output is wired to trigger line 0: an edge is an interrupt on it. */
    if (level != H.loopback_level) {
        H.loopback_level = level;
        nm_on_trigger_edge(0, level, hal_clock_us());
    }
}

uint16_t hal_battery_mv(void) { return H.script ? 0 : 3900; }

int hal_should_stop(void)
{
    if (H.script) return nm_script_done();
    (void)hal_clock_us();
    return H.duration_s > 0 && (double)H.elapsed_us >= H.duration_s * 1e6;
}

static void usage(FILE *f)
{
    fputs("usage: nm-fw-host [options]\n"
          "  --port PATH        talk over PATH (serial device or pty) instead of stdin/stdout\n"
          "  --pty              create a pty, print 'PTY <path>' on stderr, talk over it\n"
          "  --seed N           seed of the simulated sensors (default 1)\n"
          "  --rate HZ          EMG rate in Hz, 1e6 divisible by it (default 2000)\n"
          "  --emg-format F     i16 or i24 (default i16)\n"
          "  --fast             virtual clock: run as fast as possible\n"
          "  --duration-s S     stop after S seconds of device time (default: run forever)\n"
          "  --drift-ppm P      device crystal error in ppm (real-time mode)\n"
          "  --clock-start-us U initial device clock (default 0; try 4294000000 for a wrap)\n"
          "  --corrupt-rate R   probability of flipping one byte of an outgoing frame\n"
          "  --status-period-s S  status packet period (default 1)\n"
          "  --autostart        start every stream at boot, without a START command\n"
          "  --script           scripted test mode (matches the AVR build byte for byte)\n",
          f);
}

static int open_pty(void)
{
    struct termios t;
    int m = posix_openpt(O_RDWR | O_NOCTTY), s;
    const char *name;
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0 || !(name = ptsname(m))) return -1;
    /* Hold the slave open ourselves: raw mode sticks, and no EIO before the peer opens it. */
    s = open(name, O_RDWR | O_NOCTTY);
    if (s < 0 || tcgetattr(s, &t) != 0) return -1;
    cfmakeraw(&t);
    tcsetattr(s, TCSANOW, &t);
    fprintf(stderr, "PTY %s\n", name);
    fflush(stderr);
    return m;
}

int main(int argc, char **argv)
{
    static uint8_t emg_buf[NM_MAX_BODY], imu_buf[256], force_buf[256];
    uint8_t *const bufs[NM_N_SAMPLED_STREAMS] = {emg_buf, imu_buf, force_buf};
    const uint16_t caps[NM_N_SAMPLED_STREAMS] = {sizeof emg_buf, sizeof imu_buf,
                                                 sizeof force_buf};
    nm_stream_cfg_t streams[NM_N_SAMPLED_STREAMS];
    nm_device_cfg_t cfg = {"nmcore-ref-host", 1, 0, 0, 1, 1000000u, NM_FLAG_SIMULATED};
    const char *port = NULL;
    int use_pty = 0, autostart = 0, i;
    double status_s = 1.0;

    memcpy(streams, nm_default_streams, sizeof streams);
    H.in_fd = STDIN_FILENO;
    H.out_fd = STDOUT_FILENO;
    H.rng = 0x9E3779B97F4A7C15ull;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV()                                                          \
    do {                                                                 \
        if (!v) {                                                        \
            fprintf(stderr, "nm-fw-host: %s needs a value\n", a);        \
            return 2;                                                    \
        }                                                                \
        i++;                                                             \
    } while (0)
        if (!strcmp(a, "--port")) { NEEDV(); port = v; }
        else if (!strcmp(a, "--pty")) use_pty = 1;
        else if (!strcmp(a, "--seed")) { NEEDV(); cfg.seed = (uint32_t)strtoul(v, NULL, 0); }
        else if (!strcmp(a, "--rate")) {
            unsigned long r;
            NEEDV();
            r = strtoul(v, NULL, 0);
            if (r == 0 || r > NM_MAX_RATE_HZ || 1000000ul % r != 0) {
                fprintf(stderr, "nm-fw-host: --rate %s: use 1..%u Hz dividing 1000000\n", v,
                        NM_MAX_RATE_HZ);
                return 2;
            }
            streams[0].rate_hz = (uint32_t)r;
        } else if (!strcmp(a, "--emg-format")) {
            NEEDV();
            if (!strcmp(v, "i16")) streams[0].format = NM_FMT_I16;
            else if (!strcmp(v, "i24")) {
                streams[0].format = NM_FMT_I24;
                streams[0].scale = 1.9073486328125e-08f; /* 24-bit ADC, +-160 mV range */
            } else {
                fprintf(stderr, "nm-fw-host: --emg-format %s: use i16 or i24\n", v);
                return 2;
            }
        }
        else if (!strcmp(a, "--fast")) H.fast = 1;
        else if (!strcmp(a, "--duration-s")) { NEEDV(); H.duration_s = atof(v); }
        else if (!strcmp(a, "--drift-ppm")) { NEEDV(); H.drift_ppm = atof(v); }
        else if (!strcmp(a, "--clock-start-us")) {
            NEEDV();
            H.clock_start_us = (uint32_t)strtoul(v, NULL, 0);
        }
        else if (!strcmp(a, "--corrupt-rate")) { NEEDV(); H.corrupt_rate = atof(v); }
        else if (!strcmp(a, "--status-period-s")) { NEEDV(); status_s = atof(v); }
        else if (!strcmp(a, "--autostart")) autostart = 1;
        else if (!strcmp(a, "--script")) H.script = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else {
            fprintf(stderr, "nm-fw-host: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (status_s <= 0 || status_s > 4000) {
        fprintf(stderr, "nm-fw-host: --status-period-s must be in (0, 4000]\n");
        return 2;
    }
    cfg.status_period_us = (uint32_t)(status_s * 1e6);
    if (port) {
        struct termios t;
        int fd = open(port, O_RDWR | O_NOCTTY);
        if (fd < 0) {
            fprintf(stderr, "nm-fw-host: cannot open %s: %s\n", port, strerror(errno));
            return 1;
        }
        if (isatty(fd) && tcgetattr(fd, &t) == 0) {
            cfmakeraw(&t);
            tcsetattr(fd, TCSANOW, &t);
        }
        H.in_fd = H.out_fd = fd;
    } else if (use_pty) {
        int fd = open_pty();
        if (fd < 0) {
            fprintf(stderr, "nm-fw-host: cannot create a pty: %s\n", strerror(errno));
            return 1;
        }
        H.in_fd = H.out_fd = fd;
    }
    if (H.script) {
        /* The scripted mode ignores the sensor flags: it must match the AVR build. */
        memcpy(streams, nm_default_streams, sizeof streams);
        cfg.seed = NM_SCRIPT_SEED;
        cfg.status_period_us = NM_SCRIPT_STATUS_PERIOD_US;
        cfg.device_id = "nmcore-ref";
        nm_script_init();
    }
    H.seed = cfg.seed;
    H.start_ns = mono_ns();
    H.vclock_us = H.clock_start_us;
    H.last_us = H.script ? NM_SCRIPT_T0_US : H.clock_start_us;
    nm_device_init(&cfg, streams, bufs, caps);
    if (autostart && !H.script) nm_device_start(0xFF);
    while (!hal_should_stop()) {
        nm_device_poll();
        hal_wait_until(nm_device_next_due_us());
    }
    return 0;
}
