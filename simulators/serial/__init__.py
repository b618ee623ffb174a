"""Serial sensor simulator: pty pairs that speak SDS011, PMS5003, NMEA and text lines."""
