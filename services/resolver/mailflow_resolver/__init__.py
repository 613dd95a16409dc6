"""resolver: answers "which hosts take mail for this domain?" over NATS request/reply, with a TTL cache."""
