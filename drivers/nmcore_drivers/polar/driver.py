"""`polar.pmd`: a Polar H10 or Verity Sense streaming through the PMD service over BLE.

open(): connect, subscribe to the control point (indications) and the data characteristic,
check the device offers each wanted measurement and setting, and START each one. The
device forgets its measurements when the link drops, so every open() starts them again
(the supervisor calls open() after each loss). blocks(): one SampleBlock per data frame,
stamped with the device's ns timestamp of the frame's last sample; a frame that never
arrived is inferred from the timestamps and the per-stream counter jumps over it, so the
runtime sees the gap and counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nmcore.driver import DriverContext
from nmcore.errors import DeviceError
from nmcore.model import ChannelSpec, SampleBlock, StreamDescriptor, StreamKind
from nmcore.transport.ble import BleLink, NotificationQueue
from nmcore_drivers.polar.pmd import (
    PMD_CP_UUID,
    PMD_DATA_UUID,
    ControlPointResponse,
    MeasurementType,
    PmdDecoder,
    PmdOp,
    PmdStatus,
    SettingType,
    missing_samples,
    parse_control_point_response,
    parse_features,
    parse_settings,
    start_command,
)

__all__ = ["PmdStreamOptions", "PolarPmdDriver", "PolarPmdOptions", "PolarStats"]

log = logging.getLogger("nmcore.drivers.polar")

StreamName = Literal["ecg", "acc", "gyro", "mag"]
_COUNTER_BITS = 32
_COUNTER_MASK = (1 << _COUNTER_BITS) - 1
_TS_MASK = (1 << 64) - 1
# STOP on close is a courtesy (saves the strap's battery); never let it hold up shutdown.
_STOP_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class _Capability:
    measurement: MeasurementType
    rates_hz: tuple[int, ...]
    ranges: tuple[int, ...]  # G for acc, deg/s for gyro, gauss for mag; () when fixed
    resolution_bits: int
    kind: StreamKind
    channels: tuple[ChannelSpec, ...]


def _xyz(prefix: str, unit: str) -> tuple[ChannelSpec, ...]:
    return tuple(ChannelSpec(f"{prefix}_{a}", unit) for a in "xyz")


# What Polar documents for each model; the device's own GET_SETTINGS answer is checked too.
# ECG has no StreamKind of its own yet: it is a biopotential in uV like EMG.
_CAPS: dict[str, dict[str, _Capability]] = {
    "h10": {
        "ecg": _Capability(
            MeasurementType.ECG, (130,), (), 14, StreamKind.EMG, (ChannelSpec("ecg", "uV"),)
        ),
        "acc": _Capability(
            MeasurementType.ACC,
            (25, 50, 100, 200),
            (2, 4, 8),
            16,
            StreamKind.IMU,
            _xyz("acc", "mG"),
        ),
    },
    "verity_sense": {
        "acc": _Capability(MeasurementType.ACC, (52,), (8,), 16, StreamKind.IMU, _xyz("acc", "mG")),
        "gyro": _Capability(
            MeasurementType.GYRO,
            (52,),
            (250, 500, 1000, 2000),
            16,
            StreamKind.IMU,
            _xyz("gyro", "deg/s"),
        ),
        "mag": _Capability(
            MeasurementType.MAG,
            (10, 20, 50, 100),
            (50,),
            16,
            StreamKind.IMU,
            _xyz("mag", "G"),
        ),
    },
}


class PmdStreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate_hz: int = Field(gt=0, description="sample rate the device offers, e.g. 130 for ECG")
    range: int | None = Field(
        None, description="full scale: G for acc, deg/s for gyro, gauss for mag (None: largest)"
    )


class PolarPmdOptions(BaseModel):
    """Options of `polar.pmd`. Name the device by `address` (stable) or advertised `name`."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
    name: str | None = Field(None, min_length=1, description="e.g. 'Polar H10 8C4D2F21'")
    model: Literal["h10", "verity_sense"] = "h10"
    ecg: PmdStreamOptions | None = None
    acc: PmdStreamOptions | None = None
    gyro: PmdStreamOptions | None = None
    mag: PmdStreamOptions | None = None
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    control_timeout_s: float = Field(
        3.0, gt=0, le=30, description="wait this long for each control point answer"
    )
    queue_chunks: int = Field(4096, ge=16, le=1_000_000)

    @model_validator(mode="after")
    def _check(self) -> PolarPmdOptions:
        if (self.address is None) == (self.name is None):
            raise ValueError(
                'address/name: give exactly one, e.g. address = "C8:2F:4D:8C:21:2F" '
                '(see `bluetoothctl devices`) or name = "Polar H10 8C4D2F21"'
            )
        caps = _CAPS[self.model]
        wanted = self.wanted()
        if not wanted:
            example = "ecg = { rate_hz = 130 }" if self.model == "h10" else "acc = { rate_hz = 52 }"
            raise ValueError(f"streams: enable at least one stream, e.g. {example}")
        for stream, opt in wanted.items():
            cap = caps.get(stream)
            if cap is None:
                raise ValueError(
                    f"{stream}: the {self.model} has no {stream} stream; it offers "
                    f"{', '.join(caps)}"
                )
            if opt.rate_hz not in cap.rates_hz:
                raise ValueError(
                    f"{stream}.rate_hz: {opt.rate_hz} Hz is not offered by the {self.model}; "
                    f"use one of {', '.join(map(str, cap.rates_hz))}"
                )
            if opt.range is not None and opt.range not in cap.ranges:
                allowed = ", ".join(map(str, cap.ranges)) or "none (fixed)"
                raise ValueError(
                    f"{stream}.range: {opt.range} is not offered; use one of {allowed}"
                )
        return self

    def wanted(self) -> dict[str, PmdStreamOptions]:
        pairs = (("ecg", self.ecg), ("acc", self.acc), ("gyro", self.gyro), ("mag", self.mag))
        return {name: opt for name, opt in pairs if opt is not None}


@dataclass(slots=True)
class _StreamState:
    name: str
    desc: StreamDescriptor
    cap: _Capability
    opt: PmdStreamOptions
    counter: int = 0
    last_ts_ns: int | None = None
    samples: int = 0
    lost_samples: int = 0
    gaps: int = 0
    overlaps: int = 0


@dataclass(slots=True)
class PolarStats:
    opens: int = 0
    start_commands: int = 0
    unexpected_frames: int = 0
    lost_samples: dict[str, int] = field(default_factory=dict)


class PolarPmdDriver:
    """The `polar.pmd` driver (see the module docstring)."""

    Options: ClassVar[type[BaseModel]] = PolarPmdOptions

    def __init__(
        self, device_id: str, options: PolarPmdOptions | dict[str, Any], ctx: DriverContext
    ):
        self.device_id = device_id
        self.options = (
            options
            if isinstance(options, PolarPmdOptions)
            else PolarPmdOptions.model_validate(options)
        )
        self.ctx = ctx
        self.stats = PolarStats()
        self.decoder = PmdDecoder()
        caps = _CAPS[self.options.model]
        self._states: dict[MeasurementType, _StreamState] = {}
        for desc, (name, opt) in zip(
            self.describe(device_id, self.options), self.options.wanted().items(), strict=True
        ):
            cap = caps[name]
            self._states[cap.measurement] = _StreamState(name, desc, cap, opt)
        self.link = BleLink(
            device_id=device_id,
            clock=ctx.clock,
            address=self.options.address,
            name=self.options.name,
            connect_timeout_s=self.options.connect_timeout_s,
            queue_chunks=self.options.queue_chunks,
        )
        self._cp: NotificationQueue | None = None
        self._data: NotificationQueue | None = None

    @classmethod
    def describe(
        cls, device_id: str, options: PolarPmdOptions | dict[str, Any]
    ) -> list[StreamDescriptor]:
        opts = (
            options
            if isinstance(options, PolarPmdOptions)
            else PolarPmdOptions.model_validate(options)
        )
        caps = _CAPS[opts.model]
        return [
            StreamDescriptor(
                stream_id=f"{device_id}.{name}",
                device_id=device_id,
                kind=caps[name].kind,
                rate_hz=float(opt.rate_hz),
                channels=caps[name].channels,
                counter_bits=_COUNTER_BITS,
                timestamp_hz=1e9,
                timestamp_bits=64,
            )
            for name, opt in opts.wanted().items()
        ]

    @property
    def streams(self) -> Sequence[StreamDescriptor]:
        return [st.desc for st in self._states.values()]

    def lost_samples(self) -> dict[str, int]:
        """Samples inferred missing per stream id, since the driver was made."""
        return {st.desc.stream_id: st.lost_samples for st in self._states.values()}

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        self.stats.opens += 1
        link = self.link
        await link.connect()
        self._cp = await link.subscribe(PMD_CP_UUID, queue_chunks=64)
        self._data = await link.subscribe(PMD_DATA_UUID)
        features = parse_features(await link.read(PMD_CP_UUID))
        for st in self._states.values():
            if features and st.cap.measurement not in features:
                raise DeviceError(
                    f"the device does not offer {st.name} (it offers "
                    f"{', '.join(sorted(m.name.lower() for m in features))}); check `model` "
                    "and the firmware version, or remove the stream from the config",
                    self.device_id,
                )
            await self._start(st)

    async def _start(self, st: _StreamState) -> None:
        meas = st.cap.measurement
        offered = await self._command(bytes([PmdOp.GET_SETTINGS, meas]), st)
        settings = parse_settings(offered.parameters)
        rates = [int(v) for v in settings.get(SettingType.SAMPLE_RATE, [])]
        if rates and st.opt.rate_hz not in rates:
            raise DeviceError(
                f"{st.name}.rate_hz: the device offers {rates} Hz, not {st.opt.rate_hz}; "
                "change the config",
                self.device_id,
            )
        selected = {SettingType.SAMPLE_RATE: st.opt.rate_hz}
        resolutions = settings.get(SettingType.RESOLUTION)
        selected[SettingType.RESOLUTION] = (
            int(resolutions[0]) if resolutions else st.cap.resolution_bits
        )
        ranges = [int(v) for v in settings.get(SettingType.RANGE, [])]
        if ranges:
            want = st.opt.range if st.opt.range is not None else max(ranges)
            if want not in ranges:
                raise DeviceError(
                    f"{st.name}.range: the device offers {ranges}, not {want}; change the config",
                    self.device_id,
                )
            selected[SettingType.RANGE] = want
        command = start_command(meas, selected)
        answer = await self._command(command, st, allow={PmdStatus.ALREADY_IN_STATE})
        if answer.status == PmdStatus.ALREADY_IN_STATE:
            # still running from a session we could not stop (e.g. the host crashed)
            await self._command(bytes([PmdOp.STOP, meas]), st)
            answer = await self._command(command, st)
        self.stats.start_commands += 1
        factor = parse_settings(answer.parameters).get(SettingType.FACTOR)
        if factor:
            self.decoder.factors[meas] = float(factor[0])

    async def _command(
        self, command: bytes, st: _StreamState, allow: set[PmdStatus] | None = None
    ) -> ControlPointResponse:
        assert self._cp is not None
        op = command[0]
        await self.link.write(PMD_CP_UUID, command, response=True)
        try:
            async with asyncio.timeout(self.options.control_timeout_s):
                while True:
                    _, payload = await self._cp.get()
                    resp = parse_control_point_response(payload)
                    if (
                        resp is not None
                        and resp.op == op
                        and resp.measurement == st.cap.measurement
                    ):
                        break
        except TimeoutError:
            raise DeviceError(
                f"no answer from the PMD control point within {self.options.control_timeout_s:g} s "
                f"({PmdOp(op).name.lower()} {st.name}): the device may be busy with another "
                "app; close it (e.g. Polar Flow / Polar Sensor Logger) and retry",
                self.device_id,
            ) from None
        if not resp.ok and not (allow and resp.status in allow):
            raise DeviceError(
                f"{PmdOp(op).name.lower()} {st.name} refused: {resp.status_name}; check "
                f"{st.name}.rate_hz/range against what the device offers"
                + (" (charge the device / take it off the charger)" if resp.status == 13 else ""),
                self.device_id,
            )
        return resp

    def _data_queue(self) -> NotificationQueue:
        if self._data is None:
            raise DeviceError("blocks() before open()", self.device_id)
        return self._data

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        q = self._data_queue()
        while True:
            block = self._frame_block(*await q.get())  # DeviceGoneError when the link drops
            if block is not None:
                yield block

    async def stream(self, on_block: Callable[[SampleBlock], None]) -> None:
        """`blocks()` handed to `on_block` from the notification callback."""

        def handle(arrival_s: float, payload: bytes) -> None:
            block = self._frame_block(arrival_s, payload)
            if block is not None:
                on_block(block)

        await self._data_queue().stream_to(handle)  # DeviceGoneError when the link drops

    def _frame_block(self, arrival_s: float, payload: bytes) -> SampleBlock | None:
        """The block of one PMD data notification (None: not a frame of ours, counted)."""
        frame = self.decoder.decode(payload)
        if frame is None:
            return None
        st = self._states.get(frame.measurement)
        if st is None:
            self.stats.unexpected_frames += 1
            return None
        n = frame.n_samples
        ts = frame.timestamp_ns
        if st.last_ts_ns is not None:
            missing = missing_samples(st.last_ts_ns, ts, n, st.opt.rate_hz)
            if missing > 0:
                st.lost_samples += missing
                st.gaps += 1
                st.counter += missing
            elif missing < 0:
                st.overlaps += 1
        st.last_ts_ns = ts
        counter = st.counter & _COUNTER_MASK
        st.counter += n
        st.samples += n
        return SampleBlock(
            stream_id=st.desc.stream_id,
            counter=counter,
            data=frame.samples,
            arrival_s=arrival_s,
            device_ticks=ts & _TS_MASK,
            ticks_index=n - 1,
        )

    async def close(self) -> None:
        if self.link.connected:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    for st in self._states.values():
                        await self.link.write(
                            PMD_CP_UUID, bytes([PmdOp.STOP, st.cap.measurement]), response=True
                        )
        self._cp = None
        self._data = None
        await self.link.close()
        self.stats.lost_samples = self.lost_samples()
