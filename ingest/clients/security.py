"""How spendlake talks to a secured Kafka: one record of the `[kafka]` security settings, and its
translation into each client's own configuration (kafka-python keyword arguments, librdkafka
properties). Secrets are read from the environment when the settings are loaded and never
appear in a repr, a log line or an error message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""  # client certificate (PEM) for mutual TLS
    ssl_keyfile: str = ""  # its private key (PEM)
    ssl_key_password: str = field(default="", repr=False)

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaConsumer / KafkaProducer."""
        out: dict[str, Any] = {}
        if self.protocol != "PLAINTEXT":
            out["security_protocol"] = self.protocol
        if self.protocol.startswith("SASL"):
            out["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = self.sasl_password
        if self.protocol.endswith("SSL"):
            if self.ssl_cafile:
                out["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                out["ssl_certfile"] = self.ssl_certfile
            if self.ssl_keyfile:
                out["ssl_keyfile"] = self.ssl_keyfile
            if self.ssl_key_password:
                out["ssl_password"] = self.ssl_key_password
        return out

    def librdkafka(self) -> dict[str, Any]:
        """Properties for confluent-kafka's Consumer / Producer (librdkafka names)."""
        out: dict[str, Any] = {"security.protocol": self.protocol.lower()}
        if self.protocol.startswith("SASL"):
            out["sasl.mechanism"] = self.sasl_mechanism or "PLAIN"
            out["sasl.username"] = self.sasl_username
            out["sasl.password"] = self.sasl_password
        if self.protocol.endswith("SSL"):
            if self.ssl_cafile:
                out["ssl.ca.location"] = self.ssl_cafile
            if self.ssl_certfile:
                out["ssl.certificate.location"] = self.ssl_certfile
            if self.ssl_keyfile:
                out["ssl.key.location"] = self.ssl_keyfile
            if self.ssl_key_password:
                out["ssl.key.password"] = self.ssl_key_password
        return out


__all__ = ["KafkaSecurity"]
