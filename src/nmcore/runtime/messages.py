"""The one place where the runtime's outputs become the published payload models.

The trial engine, the sway stage and the pipeline emit plain dicts (cheap, and no stage
imports the publisher); this module turns each into its schema model, so stdout, MQTT,
the recorder and `nmcore analyze` all carry exactly the same payloads.
"""

from __future__ import annotations

from typing import Any

from nmcore import __version__
from nmcore.publish.schemas import (
    AlgorithmRef,
    CrossCheck,
    DeviceEvent,
    GapEvent,
    LandingMessage,
    MessageBase,
    MuscleOnset,
    OnsetEvent,
    OnsetQuality,
    PerturbationEvent,
    Provenance,
    SwayMessage,
    TrialQuality,
    TrialResultMessage,
)

__all__ = ["to_message", "trial_id"]


def trial_id(session: str, number: int) -> str:
    """Unique across daemon restarts: the session's start stamp plus the trial number."""
    return f"{session}-{number:04d}"


def _provenance(obj: dict[str, Any]) -> Provenance:
    prov = obj.get("provenance") or {}
    algos = {
        role: AlgorithmRef(name=a["name"], version=str(a["version"]), params_hash=a["params_hash"])
        for role, a in (prov.get("algorithms") or {}).items()
    }
    return Provenance(
        algorithms=algos,
        nmcore_version=prov.get("nmcore_version", __version__),
        device_ids=list(prov.get("devices", [])),
        calibration_ids=dict(prov.get("calibrations", {})),
        latency_corrections_ms=dict(prov.get("latency_corrections_ms", {})),
    )


def to_message(obj: dict[str, Any], session: str) -> MessageBase | None:
    """The schema model for one runtime output, or None for outputs that are not published
    as messages (status snapshots go to the status topics through their own path)."""
    kind = obj.get("type")
    if kind == "perturbation":
        return PerturbationEvent(
            t_s=obj["onset_s"],
            trial_id=trial_id(session, obj["trial"]),
            source=obj["source"],
            onset_s=obj["onset_s"],
            alarm_s=obj["alarm_s"] if obj.get("alarm_s") is not None else obj["onset_s"],
            latency_correction_ms=obj.get("latency_correction_ms", 0.0),
        )
    if kind == "onset":
        algo = obj.get("algorithm_ref") or {}
        return OnsetEvent(
            t_s=obj["onset_s"],
            trial_id=trial_id(session, obj["trial"]),
            stream_id=obj.get("stream"),
            channel=obj["channel"],
            onset_s=obj["onset_s"],
            alarm_s=obj["alarm_s"] if obj.get("alarm_s") is not None else obj["onset_s"],
            latency_ms=obj["latency_ms"],
            algorithm=obj["algorithm"],
            algorithm_version=str(algo.get("version", "")),
            params_hash=str(algo.get("params_hash", "")),
        )
    if kind == "trial_result":
        q = obj.get("quality", {})
        onsets = [
            MuscleOnset(
                channel=m["channel"],
                detected=m["detected"],
                onset_s=m["onset_s"],
                alarm_s=m["alarm_s"],
                latency_ms=m["latency_ms"],
                premotor_ms=m["premotor_ms"],
                motor_ms=m["motor_ms"],
                peak=m["peak"],
                area=m["area"],
                quality=OnsetQuality(
                    snr_db=m["snr_db"],
                    gap_in_window=bool(q.get("gap_in_window", False)),
                    clipping=bool(q.get("clipping", False)),
                    missed=not m["detected"],
                ),
            )
            for m in obj["muscles"]
        ]
        return TrialResultMessage(
            t_s=obj["stimulus_s"],
            trial_id=trial_id(session, obj["trial"]),
            protocol=obj.get("protocol", "perturbation"),
            subject_id=obj.get("subject_id"),
            session_id=obj.get("session_id"),
            stimulus_source=obj["stimulus_source"],
            stimulus_s=obj["stimulus_s"],
            onsets=onsets,
            force_onset_s=obj.get("force_onset_s"),
            postural_latency_ms=obj.get("postural_response_ms"),
            cross_check={k: CrossCheck(**v) for k, v in obj.get("cross_check", {}).items()},
            quality=TrialQuality(
                gap_in_window=bool(q.get("gap_in_window", False)),
                clipping=bool(q.get("clipping", False)),
                incomplete=bool(q.get("incomplete", False)),
                missed=list(q.get("missed", [])),
                rest_from_calibration=bool(q.get("rest_from_calibration", False)),
            ),
            provenance=_provenance(obj),
        )
    if kind == "sway":
        algo = obj.get("algorithm") or {}
        return SwayMessage(
            t_s=obj["t_s"],
            stream_id=obj["stream_id"],
            window_s=obj["window_s"],
            status=obj["status"],
            n_samples=obj["n_samples"],
            n_excluded=obj["n_excluded"],
            measures=obj["measures"],
            units=obj["units"],
            params=obj["params"],
            provenance=Provenance(
                algorithms={"cop_sway": AlgorithmRef(**algo)} if algo else {},
                nmcore_version=__version__,
            ),
        )
    if kind == "landing":
        algo = obj.get("algorithm") or {}
        return LandingMessage(
            t_s=obj["t_s"],
            stream_id=obj["stream_id"],
            status=obj["status"],
            measures=obj["measures"],
            notes=list(obj.get("notes", [])),
            params=obj["params"],
            provenance=Provenance(
                algorithms={"landing": AlgorithmRef(**algo)} if algo else {},
                nmcore_version=__version__,
            ),
        )
    if kind == "gap":
        return GapEvent(
            t_s=obj["t_s"],
            stream_id=obj["stream_id"],
            first_index=obj["first_index"],
            missing_samples=obj["missing_samples"],
            start_s=obj["start_s"],
            end_s=obj["end_s"],
        )
    if kind == "device":
        return DeviceEvent(
            t_s=obj["t_s"], device_id=obj["source"], state=obj["state"], reason=obj["reason"]
        )
    return None
