"""The live messages' MQTT v5 properties are packed once, and again only after a change."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nmcore.publish.mqtt import _PackedOnce


def test_packed_once_packs_like_paho_and_again_after_a_change() -> None:
    props = _PackedOnce(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    plain = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = plain.MessageExpiryInterval = 2
    first = props.pack()
    assert first == plain.pack()  # type: ignore[no-untyped-call]
    assert props.pack() is first  # cached
    props.MessageExpiryInterval = plain.MessageExpiryInterval = 7
    assert props.pack() == plain.pack() != first  # type: ignore[no-untyped-call]
    del props.MessageExpiryInterval
    assert props.pack() == Properties(PacketTypes.PUBLISH).pack()  # type: ignore[no-untyped-call]
