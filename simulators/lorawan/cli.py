"""``gateway sim lorawan``: publish simulated ChirpStack / TTS uplinks to an MQTT broker."""

from __future__ import annotations

import argparse
import asyncio

import aiomqtt
from gateway.simulators.lorawan.ns import NetworkServerSim, make_devices
from gateway.simulators.lorawan.payloads import ENCODERS

EPILOG = """example:
  gateway sim lorawan --server chirpstack --port 1883 --devices 5 --codec dragino_lht65 \\
      --rate 20 --count 1000 --duplicate-every 10 --malformed-every 50
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--host", default="127.0.0.1", help="MQTT broker host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="MQTT broker port (default 1883)")
    parser.add_argument("--server", choices=["chirpstack", "ttn"], default="chirpstack")
    parser.add_argument("--application", default="", help="ChirpStack application id or TTS app@tenant")
    parser.add_argument("--devices", type=int, default=3, help="number of simulated devices")
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="cayenne_lpp")
    parser.add_argument("--rate", type=float, default=1.0, help="uplinks per second, all devices (0 = max)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many uplinks (0 = run forever)")
    parser.add_argument("--duplicate-every", type=int, default=0, help="publish every n-th uplink twice")
    parser.add_argument("--malformed-every", type=int, default=0, help="add a malformed message every n uplinks")
    parser.add_argument("--rejoin-every", type=int, default=0, help="devices rejoin (fCnt reset) every n uplinks")
    parser.add_argument("--qos", type=int, choices=[0, 1], default=1)


def main(args: argparse.Namespace) -> int:
    sim = NetworkServerSim(
        host=args.host,
        port=args.port,
        server=args.server,
        application=args.application,
        devices=make_devices(args.devices, args.codec),
        rate=args.rate,
        duplicate_every=args.duplicate_every,
        malformed_every=args.malformed_every,
        rejoin_every=args.rejoin_every,
        qos=args.qos,
    )
    try:
        stats = asyncio.run(sim.run(args.count or None))
    except KeyboardInterrupt:
        stats = sim.stats
    except (OSError, aiomqtt.MqttError) as exc:
        print(f"cannot reach the MQTT broker at {args.host}:{args.port}: {exc}")
        return 1
    print(
        f"published {stats.uplinks} uplinks, {stats.duplicates} duplicates, {stats.malformed} malformed, "
        f"{stats.joins} joins"
    )
    return 0
