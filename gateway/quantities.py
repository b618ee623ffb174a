"""Canonical quantity names and units.

Units are SenML unit names (RFC 8428 primary units, RFC 8798 secondary units) so
that a reading can be written as SenML without translation. docs/data-model.md
is generated from (and tested against) this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Quantity:
    name: str
    unit: str
    description: str


_TABLE: tuple[Quantity, ...] = (
    # climate and air quality
    Quantity("temperature", "Cel", "air or surface temperature"),
    Quantity("relative_humidity", "%RH", "relative humidity"),
    Quantity("pressure", "hPa", "atmospheric pressure"),
    Quantity("dew_point", "Cel", "dew point"),
    Quantity("pm1", "ug/m3", "particulate matter < 1 um, mass concentration"),
    Quantity("pm2_5", "ug/m3", "particulate matter < 2.5 um, mass concentration"),
    Quantity("pm4", "ug/m3", "particulate matter < 4 um, mass concentration"),
    Quantity("pm10", "ug/m3", "particulate matter < 10 um, mass concentration"),
    Quantity("particle_count_0_3", "count", "particles > 0.3 um per 0.1 L of air"),
    Quantity("particle_count_0_5", "count", "particles > 0.5 um per 0.1 L of air"),
    Quantity("particle_count_1", "count", "particles > 1.0 um per 0.1 L of air"),
    Quantity("particle_count_2_5", "count", "particles > 2.5 um per 0.1 L of air"),
    Quantity("particle_count_5", "count", "particles > 5.0 um per 0.1 L of air"),
    Quantity("particle_count_10", "count", "particles > 10 um per 0.1 L of air"),
    Quantity("co2", "ppm", "carbon dioxide concentration"),
    Quantity("tvoc", "ppb", "total volatile organic compounds"),
    Quantity("no2", "ug/m3", "nitrogen dioxide concentration"),
    Quantity("o3", "ug/m3", "ozone concentration"),
    Quantity("co", "ppm", "carbon monoxide concentration"),
    Quantity("illuminance", "lx", "illuminance"),
    Quantity("uv_index", "/", "UV index"),
    Quantity("sound_level", "dB", "A-weighted sound pressure level"),
    # weather
    Quantity("wind_speed", "m/s", "wind speed"),
    Quantity("wind_direction", "deg", "wind direction, degrees from north"),
    Quantity("rainfall", "mm", "precipitation since the previous reading"),
    Quantity("rain_rate", "mm/h", "precipitation intensity"),
    Quantity("solar_irradiance", "W/m2", "global horizontal irradiance"),
    # electrical energy
    Quantity("voltage", "V", "RMS voltage"),
    Quantity("current", "A", "RMS current"),
    Quantity("active_power", "W", "active power"),
    Quantity("reactive_power", "var", "reactive power"),
    Quantity("apparent_power", "VA", "apparent power"),
    Quantity("power_factor", "/", "power factor, -1..1"),
    Quantity("phase_angle", "deg", "phase angle"),
    Quantity("frequency", "Hz", "mains frequency"),
    Quantity("energy_import", "kWh", "imported active energy, cumulative"),
    Quantity("energy_export", "kWh", "exported active energy, cumulative"),
    Quantity("energy_total", "kWh", "total active energy, cumulative"),
    Quantity("reactive_energy_import", "kvarh", "imported reactive energy, cumulative"),
    Quantity("reactive_energy_export", "kvarh", "exported reactive energy, cumulative"),
    # device and radio health
    Quantity("battery_voltage", "V", "battery voltage"),
    Quantity("battery_level", "%EL", "remaining battery charge"),
    Quantity("rssi", "dBm", "received signal strength"),
    Quantity("snr", "dB", "signal to noise ratio"),
    Quantity("frame_counter", "count", "LoRaWAN uplink frame counter"),
    Quantity("spreading_factor", "count", "LoRa spreading factor"),
    Quantity("uptime", "s", "time since the device started"),
    # position
    Quantity("latitude", "lat", "WGS84 latitude, degrees north"),
    Quantity("longitude", "lon", "WGS84 longitude, degrees east"),
    Quantity("altitude", "m", "altitude above mean sea level"),
    Quantity("gps_fix_quality", "count", "NMEA GGA fix quality (0 = no fix)"),
    Quantity("gps_satellites", "count", "satellites used in the fix"),
    Quantity("speed", "m/s", "ground speed"),
    Quantity("course", "deg", "course over ground, degrees from true north"),
    # generic state and counters
    Quantity("occupancy", "/", "1 = occupied (parking bay, room), 0 = free"),
    Quantity("presence", "/", "1 = presence detected"),
    Quantity("open", "/", "1 = open (door, lid, valve)"),
    Quantity("fill_level", "%", "container fill level"),
    Quantity("distance", "m", "measured distance"),
    Quantity("water_volume", "m3", "cumulative water volume"),
    Quantity("flow_rate", "m3/s", "volumetric flow rate"),
    Quantity("digital_input", "/", "state of a digital input"),
    Quantity("digital_output", "/", "state of a digital output"),
    Quantity("analog_input", "/", "raw analog input, device units"),
    Quantity("analog_output", "/", "raw analog output, device units"),
    Quantity("pulse_count", "count", "cumulative pulse counter"),
    Quantity("sequence", "count", "monotonic sequence number (test and diagnostics)"),
    Quantity("acceleration_x", "m/s2", "acceleration on the X axis"),
    Quantity("acceleration_y", "m/s2", "acceleration on the Y axis"),
    Quantity("acceleration_z", "m/s2", "acceleration on the Z axis"),
    Quantity("status", "/", "device-specific status or error code"),
    Quantity("angular_velocity_x", "rad/s", "angular velocity about the X axis"),
    Quantity("angular_velocity_y", "rad/s", "angular velocity about the Y axis"),
    Quantity("angular_velocity_z", "rad/s", "angular velocity about the Z axis"),
    Quantity("motion_count", "count", "motion events (PIR or accelerometer) since the previous reading"),
    Quantity("pulse_count_delta", "count", "pulses since the previous reading"),
    Quantity("water_leak", "/", "water leak sensor level, device units (0 = dry)"),
    Quantity("link_margin", "dB", "LoRaWAN demodulation margin reported by the device (DevStatusAns)"),
    # Cayenne LPP's generic types: meaning depends on the device
    Quantity("percentage", "%", "a percentage (Cayenne LPP type 120)"),
    Quantity("concentration", "ppm", "a gas concentration (Cayenne LPP type 125)"),
    Quantity("direction", "deg", "a direction, degrees (Cayenne LPP type 132)"),
    Quantity("generic", "/", "an unsigned value without unit (Cayenne LPP type 100)"),
    Quantity("unixtime", "s", "a Unix time sent by the device (Cayenne LPP type 133)"),
    Quantity("colour_r", "/", "red component, 0-255 (Cayenne LPP type 135)"),
    Quantity("colour_g", "/", "green component, 0-255 (Cayenne LPP type 135)"),
    Quantity("colour_b", "/", "blue component, 0-255 (Cayenne LPP type 135)"),
)

QUANTITIES: dict[str, Quantity] = {q.name: q for q in _TABLE}

# Unit spellings met in datasheets and payload codecs, mapped to the canonical
# SenML unit and the factor that converts a value into it.
UNIT_ALIASES: dict[str, tuple[str, float]] = {
    "C": ("Cel", 1.0),
    "°C": ("Cel", 1.0),
    "degC": ("Cel", 1.0),
    "celsius": ("Cel", 1.0),
    "%": ("%", 1.0),
    "%rh": ("%RH", 1.0),
    "%RH": ("%RH", 1.0),
    "RH": ("%RH", 1.0),
    "µg/m3": ("ug/m3", 1.0),
    "µg/m³": ("ug/m3", 1.0),
    "ug/m³": ("ug/m3", 1.0),
    "Pa": ("hPa", 0.01),
    "mbar": ("hPa", 1.0),
    "kPa": ("hPa", 10.0),
    "kW": ("W", 1000.0),
    "Wh": ("kWh", 0.001),
    "MWh": ("kWh", 1000.0),
    "kvar": ("var", 1000.0),
    "kVA": ("VA", 1000.0),
    "varh": ("kvarh", 0.001),
    "mV": ("V", 0.001),
    "mA": ("A", 0.001),
    "dbm": ("dBm", 1.0),
    "db": ("dB", 1.0),
    "km/h": ("m/s", 1 / 3.6),
    "l": ("m3", 0.001),
    "L": ("m3", 0.001),
    "percent": ("%", 1.0),
}


def canonical_unit(quantity: str) -> str | None:
    q = QUANTITIES.get(quantity)
    return q.unit if q else None


def convert_to_canonical(quantity: str, value: float, unit: str) -> tuple[float, str] | None:
    """Return (value, unit) in the quantity's canonical unit, or None if not convertible.

    ``unit`` already canonical -> unchanged. A known alias -> scaled. A quantity
    outside the table keeps its unit (custom quantities are allowed, see docs).
    """
    target = canonical_unit(quantity)
    if target is None or unit == target:
        return value, unit
    alias = UNIT_ALIASES.get(unit)
    if alias is None:
        return None
    alias_unit, factor = alias
    if alias_unit != target:
        return None
    return value * factor, target
