"""Use cases. Each takes its ports (typing.Protocol) as arguments."""
