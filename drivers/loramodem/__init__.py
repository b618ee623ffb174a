"""Point-to-point LoRa modems on a serial port (Microchip RN2483, RAKwireless RAK3172 / RUI3)."""
