"""LoRaWAN uplinks from a network server's MQTT integration (ChirpStack v4, The Things Stack v3)."""
