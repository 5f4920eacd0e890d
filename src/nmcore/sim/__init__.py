"""The simulated lab rig (signal models, device clocks, transports, faults, ground truth).

Driver classes binding these to the plugin API are in `nmcore_drivers.sim`;
`nmcore.sim.run.run_station` drives a set of them on one clock (tests and benchmarks).

Ground truth: every record goes to `ctx.truth` (if set) and to `Scenario.truth` (the newest
200 000). Times `*_t_s`/`t_s` are in the clock's time base. Record types:

- clock: device_id, t_start_s (power-on), drift_ppm, device_time_at_start_s, timestamp_hz,
  timestamp_bits, counter_bits, transport, streams {id: rate_hz, true_rate_hz, packet_samples}
- trial: trial, t_s (trigger), motion_onset_t_s, kind, direction, amplitude, amplitude_unit
- muscle_onset: device_id, stream_id, trial, channel, muscle, t_s (first burst sample), index
  (sample index since power-on), latency_ms (from motion onset), duration_ms, snr_db, shape
- force_response / imu_response: device_id, stream_id, trial, t_s, latency_ms
- landing: device_id, stream_id, hop, takeoff_t_s, landing_t_s, flight_s, peak_force_n, peak_t_s
- loss: cause (drop | crc | outage | reset), device_id, stream_id, first_counter (raw, wrapped),
  first_index, n_samples, t_s (true time of the first lost sample)
- outage: device_id, t_s, end_t_s;  reset: device_id, t_s, resume_t_s
"""

from __future__ import annotations

from nmcore.sim.device import (
    ClockOptions,
    FaultOptions,
    SimDevice,
    SimDeviceOptions,
    TransportOptions,
)
from nmcore.sim.scenario import SCENARIO_KEY, BodyOptions, Scenario, ScenarioOptions, Trial

__all__ = [
    "SCENARIO_KEY",
    "BodyOptions",
    "ClockOptions",
    "FaultOptions",
    "Scenario",
    "ScenarioOptions",
    "SimDevice",
    "SimDeviceOptions",
    "TransportOptions",
    "Trial",
]
