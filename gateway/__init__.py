"""Urban sensor gateway: drivers -> normaliser -> durable buffer -> sinks."""

__version__ = "0.1.0"
