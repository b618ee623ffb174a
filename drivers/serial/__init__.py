"""Serial sensors: line protocols, Nova SDS011, Plantower PMS5003, NMEA 0183 GPS."""
