"""The MQTT topic tree of one station; the only place topic strings are built.

```
<root>/<station>/status                    daemon state, retained (last will: lost)
<root>/<station>/device/<device_id>/status device state and clock figures, retained
<root>/<station>/event/<type>              perturbation | onset | gap | device   (QoS 1, outbox)
<root>/<station>/trial/result              one message per trial                 (QoS 1, outbox)
<root>/<station>/sway                      centre-of-pressure sway figures       (QoS 1, outbox)
<root>/<station>/landing                   landing / stabilisation measures      (QoS 1, outbox)
<root>/<station>/live/<stream_id>          decimated dashboard streams            (QoS 0, expiry)
<root>/<station>/cmd/<name>                commands in
<root>/<station>/reply/<id>                command replies for MQTT 3.1.1 clients
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["EVENT_TYPES", "Topics", "check_segment"]

EVENT_TYPES = ("perturbation", "onset", "gap", "device", "mark")

# One topic level: no separators, wildcards or NUL (MQTT forbids them in topic names);
# the same alphabet as config identifiers plus '.', which stream ids use.
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_segment(value: str, what: str) -> str:
    """Return `value` if it is a safe single topic level, else raise ValueError naming `what`."""
    if not _SEGMENT.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} cannot be a topic level: use 1-64 letters, digits, '_', '-' or '.'"
        )
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under `<root>/<station>/`. `root` may itself contain '/' levels."""

    root: str
    station: str

    def __post_init__(self) -> None:
        if not self.root or any(c in self.root for c in "+#\0") or self.root.endswith("/"):
            raise ValueError(
                f"mqtt root {self.root!r} must be non-empty, without '+', '#' or a trailing '/'"
            )
        check_segment(self.station, "station id")

    @property
    def base(self) -> str:
        return f"{self.root}/{self.station}"

    def status(self) -> str:
        return f"{self.base}/status"

    def device_status(self, device_id: str) -> str:
        return f"{self.base}/device/{check_segment(device_id, 'device id')}/status"

    def event(self, event_type: str) -> str:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"event type {event_type!r} is not one of {', '.join(EVENT_TYPES)}")
        return f"{self.base}/event/{event_type}"

    def trial_result(self) -> str:
        return f"{self.base}/trial/result"

    def sway(self) -> str:
        return f"{self.base}/sway"

    def landing(self) -> str:
        return f"{self.base}/landing"

    def live(self, stream_id: str) -> str:
        return f"{self.base}/live/{check_segment(stream_id, 'stream id')}"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{check_segment(name, 'command name')}"

    def command_filter(self) -> str:
        """Subscription filter for every command of this station."""
        return f"{self.base}/cmd/+"

    def command_name(self, topic: str) -> str | None:
        """The command name of a topic under cmd/, or None if the topic is not a command."""
        prefix = f"{self.base}/cmd/"
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix) :]
        return name if name and "/" not in name else None

    def reply(self, reply_id: str) -> str:
        return f"{self.reply_prefix()}{check_segment(reply_id, 'reply_to')}"

    def reply_prefix(self) -> str:
        """Replies go only below this prefix (the daemon's ACL lets it write nowhere else)."""
        return f"{self.base}/reply/"

    def is_reply_topic(self, topic: str) -> bool:
        """True if `topic` is a concrete topic name under reply/ (an allowed v5 response topic)."""
        prefix = self.reply_prefix()
        rest = topic[len(prefix) :] if topic.startswith(prefix) else ""
        return bool(rest) and not any(c in rest for c in "+#\0") and len(topic) <= 256
