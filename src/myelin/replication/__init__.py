"""The stream spine: streams and positions, the notifier, the bus, tokens."""
