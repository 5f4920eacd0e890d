"""Polar Measurement Data (PMD): control point messages and data frames. Pure, no I/O.

Specification: Polar BLE SDK, "Polar Measurement Data Specification" (technical_documentation/
in github.com/polarofficial/polar-ble-sdk) and the byte vectors in its Android tests.

Data frame (notification on FB005C82):
  byte 0      measurement type (0 ECG, 1 PPG, 2 ACC, 3 PPI, 5 gyro, 6 magnetometer)
  bytes 1-8   uint64 LE: time of the LAST sample of the frame, ns since 2000-01-01T00:00
  byte 9      frame type; bit 7 set = delta compressed, bits 0-6 = the format number
  bytes 10-   samples: raw frames hold little-endian signed values, channel after channel;
              compressed frames hold a reference sample and delta blocks (see _kernels).
Control point (FB005C81): the host writes [op, measurement type, settings...]; the device
answers by indication [0xF0, op, measurement type, status, more, parameters...].
Settings are TLV-like: [setting type, count, count values]; values are uint16 LE except
RANGE_MILLIUNIT and FACTOR (4 bytes; FACTOR a float32) and CHANNELS (1 byte).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from nmcore_drivers.polar import _kernels as k

__all__ = [
    "PMD_CP_UUID",
    "PMD_DATA_UUID",
    "PMD_EPOCH_UNIX_S",
    "PMD_SERVICE_UUID",
    "ControlPointResponse",
    "FrameFormat",
    "MeasurementType",
    "PmdDecodeStats",
    "PmdDecoder",
    "PmdFrame",
    "PmdOp",
    "PmdStatus",
    "SettingType",
    "decode_raw",
    "encode_settings",
    "frame_format",
    "missing_samples",
    "parse_control_point_response",
    "parse_features",
    "parse_settings",
    "start_command",
]

PMD_SERVICE_UUID = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CP_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
PMD_EPOCH_UNIX_S = 946_684_800  # 2000-01-01T00:00:00Z
HEADER_SIZE = 10
_RESPONSE_CODE = 0xF0
_FEATURES_CODE = 0x0F


class MeasurementType(IntEnum):
    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAG = 6


class PmdOp(IntEnum):
    GET_SETTINGS = 0x01
    START = 0x02
    STOP = 0x03


class SettingType(IntEnum):
    SAMPLE_RATE = 0
    RESOLUTION = 1
    RANGE = 2
    RANGE_MILLIUNIT = 3
    CHANNELS = 4
    FACTOR = 5


class PmdStatus(IntEnum):
    SUCCESS = 0
    INVALID_OP_CODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13


_SETTING_WIDTH = {
    SettingType.SAMPLE_RATE: 2,
    SettingType.RESOLUTION: 2,
    SettingType.RANGE: 2,
    SettingType.RANGE_MILLIUNIT: 4,
    SettingType.CHANNELS: 1,
    SettingType.FACTOR: 4,
}


@dataclass(frozen=True, slots=True)
class ControlPointResponse:
    op: int
    measurement: int
    status: int
    more: bool
    parameters: bytes

    @property
    def ok(self) -> bool:
        return self.status == PmdStatus.SUCCESS

    @property
    def status_name(self) -> str:
        try:
            return PmdStatus(self.status).name.lower()
        except ValueError:
            return f"status_{self.status}"


def parse_control_point_response(data: bytes) -> ControlPointResponse | None:
    """An indication on the control point, or None when it is not a response (too short
    or not starting with 0xF0)."""
    if len(data) < 4 or data[0] != _RESPONSE_CODE:
        return None
    more = len(data) > 4 and data[4] != 0
    return ControlPointResponse(data[1], data[2], data[3], more, bytes(data[5:]))


def parse_features(data: bytes) -> set[MeasurementType]:
    """The control point's read value: 0x0F then a bitmask of the measurement types offered."""
    if len(data) < 2 or data[0] != _FEATURES_CODE:
        return set()
    mask = int.from_bytes(data[1:3], "little")
    return {m for m in MeasurementType if mask >> int(m) & 1}


def parse_settings(data: bytes) -> dict[SettingType, list[float]]:
    """Settings offered (GET_SETTINGS answer) or chosen (START answer: the FACTOR).
    Unknown setting types end parsing (their width is unknown)."""
    out: dict[SettingType, list[float]] = {}
    i = 0
    while i + 2 <= len(data):
        try:
            kind = SettingType(data[i])
        except ValueError:
            break
        count = data[i + 1]
        width = _SETTING_WIDTH[kind]
        end = i + 2 + count * width
        if end > len(data):
            break
        values: list[float] = []
        for j in range(count):
            raw = data[i + 2 + j * width : i + 2 + (j + 1) * width]
            if kind is SettingType.FACTOR:
                values.append(struct.unpack("<f", raw)[0])
            else:
                values.append(
                    int.from_bytes(raw, "little", signed=kind is SettingType.RANGE_MILLIUNIT)
                )
        out[kind] = values
        i = end
    return out


def encode_settings(selected: dict[SettingType, int]) -> bytes:
    """One value per setting, in the START command's form."""
    out = bytearray()
    for kind, value in selected.items():
        out += bytes([int(kind), 1]) + int(value).to_bytes(_SETTING_WIDTH[kind], "little")
    return bytes(out)


def start_command(measurement: MeasurementType, selected: dict[SettingType, int]) -> bytes:
    return bytes([PmdOp.START, int(measurement)]) + encode_settings(selected)


# -- data frames ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameFormat:
    """How one (measurement, frame type, compressed) combination is laid out and scaled.

    physical = raw * scale * (factor if uses_factor else 1), where factor comes from the
    START answer (FACTOR setting; 1.0 when absent).
    """

    channels: int
    bits: int
    scale: float = 1.0
    uses_factor: bool = False


# Formats documented by Polar and covered by its SDK tests. Units: ECG uV, ACC mG,
# gyro deg/s, magnetometer gauss, PPG raw counts.
_FORMATS: dict[tuple[int, int, bool], FrameFormat] = {
    (MeasurementType.ECG, 0, False): FrameFormat(1, 24),
    (MeasurementType.ACC, 0, False): FrameFormat(3, 8),
    (MeasurementType.ACC, 1, False): FrameFormat(3, 16),
    (MeasurementType.ACC, 2, False): FrameFormat(3, 24),
    # compressed type 0 arrives in G: factor * 1000 gives mG
    (MeasurementType.ACC, 0, True): FrameFormat(3, 16, 1000.0, True),
    (MeasurementType.ACC, 1, True): FrameFormat(3, 16, 1.0, True),
    (MeasurementType.GYRO, 0, True): FrameFormat(3, 16, 1.0, True),
    (MeasurementType.MAG, 0, True): FrameFormat(3, 16, 1.0, True),
    (MeasurementType.PPG, 0, True): FrameFormat(4, 24, 1.0, True),
}


def frame_format(measurement: int, frame_type: int, compressed: bool) -> FrameFormat | None:
    return _FORMATS.get((measurement, frame_type, compressed))


@dataclass(frozen=True, slots=True)
class PmdFrame:
    """One decoded data frame. `samples`: (n, channels) float64 in physical units;
    `timestamp_ns`: device time of the last sample, ns since 2000-01-01."""

    measurement: MeasurementType
    timestamp_ns: int
    frame_type: int
    compressed: bool
    samples: npt.NDArray[np.float64]

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])


@dataclass(slots=True)
class PmdDecodeStats:
    """Every notification ends up in exactly one of these."""

    frames_ok: int = 0
    truncated: int = 0
    unknown_measurement: int = 0
    unknown_frame_type: int = 0
    bad_delta: int = 0
    by_measurement: dict[int, int] = field(default_factory=dict)

    @property
    def frames_rejected(self) -> int:
        return self.truncated + self.unknown_measurement + self.unknown_frame_type + self.bad_delta


def decode_raw(
    body: npt.NDArray[np.uint8], channels: int, bits: int
) -> npt.NDArray[np.int64] | None:
    """Little-endian signed `bits`-bit values, channel after channel; None if the length is
    not a whole number of samples. Vectorised: one pass of numpy over the frame."""
    width = bits // 8
    per_sample = width * channels
    if body.shape[0] % per_sample:
        return None
    b = body.reshape(-1, width).astype(np.int64)
    v = b[:, 0].copy()
    for i in range(1, width):
        v |= b[:, i] << (8 * i)
    sign = np.int64(1) << (bits - 1)
    v = (v ^ sign) - sign
    return v.reshape(-1, channels)


class PmdDecoder:
    """Data notifications in, `PmdFrame`s out; bad notifications are counted and skipped.

    `factors[measurement]` comes from the START answer (FACTOR) for compressed formats.
    """

    def __init__(self) -> None:
        self.stats = PmdDecodeStats()
        self.factors: dict[int, float] = {}

    def decode(self, payload: bytes) -> PmdFrame | None:
        st = self.stats
        if len(payload) < HEADER_SIZE:
            st.truncated += 1
            return None
        meas_code = payload[0]
        try:
            meas = MeasurementType(meas_code)
        except ValueError:
            st.unknown_measurement += 1
            return None
        ts_ns = int.from_bytes(payload[1:9], "little")
        ft = payload[9]
        compressed = bool(ft & 0x80)
        fmt = frame_format(meas, ft & 0x7F, compressed)
        if fmt is None:
            st.unknown_frame_type += 1
            return None
        buf = np.frombuffer(payload, dtype=np.uint8)
        if compressed:
            # at most one sample per delta bit, plus the reference sample
            out = np.empty(
                ((len(payload) - HEADER_SIZE) * 8 // fmt.channels + 1, fmt.channels), np.int64
            )
            n = k.delta_decode(buf, HEADER_SIZE, fmt.channels, fmt.bits, out)
            if n < 0:
                if n == k.ERR_TRUNCATED:
                    st.truncated += 1
                else:
                    st.bad_delta += 1
                return None
            raw = out[:n]
        else:
            body = buf[HEADER_SIZE:]
            if body.shape[0] == 0:
                st.truncated += 1
                return None
            decoded = decode_raw(body, fmt.channels, fmt.bits)
            if decoded is None:
                st.truncated += 1
                return None
            raw = decoded
        scale = fmt.scale * (self.factors.get(meas, 1.0) if fmt.uses_factor else 1.0)
        samples = raw.astype(np.float64)
        if scale != 1.0:
            samples *= scale
        st.frames_ok += 1
        st.by_measurement[meas] = st.by_measurement.get(meas, 0) + 1
        return PmdFrame(meas, ts_ns, ft & 0x7F, compressed, samples)


def missing_samples(prev_last_ns: int, last_ns: int, n: int, rate_hz: float) -> int:
    """Samples the device took between two frames that never arrived.

    Both timestamps belong to a frame's last sample, so the frames span
    round((last - prev_last) * rate) sample periods, of which `n` arrived. Negative when
    the frames overlap (a device clock step); the caller decides what to do with that.
    """
    periods = round((last_ns - prev_last_ns) * rate_hz / 1e9)
    return int(periods) - n
