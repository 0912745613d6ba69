"""Streams as sources: Redis Streams, NATS JetStream and MQTT, one offset range per unit."""

from .base import StreamGapError, StreamSource

__all__ = ["StreamSource", "StreamGapError", "RedisStream", "NatsStream", "MqttTopic"]


def __getattr__(name: str):
    if name == "RedisStream":
        from .redis import RedisStream

        return RedisStream
    if name == "NatsStream":
        from .nats import NatsStream

        return NatsStream
    if name == "MqttTopic":
        from .mqtt import MqttTopic

        return MqttTopic
    raise AttributeError(name)
