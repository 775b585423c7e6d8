"""The relay to NATS JetStream, against real nats-server processes."""
