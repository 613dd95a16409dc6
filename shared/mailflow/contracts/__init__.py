"""The contracts between the six services: NATS subjects, JetStream streams and consumers, message
schemas and REST schemas. Read `subjects.py` top to bottom to see the whole flow of a message."""
