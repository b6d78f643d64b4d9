"""The fact builders tests report with (they live with the client tools)."""

from cli.facts import consumer, fan_level, order, store, streamer, ts

__all__ = ["consumer", "fan_level", "order", "store", "streamer", "ts"]
