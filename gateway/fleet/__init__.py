"""Fleet operation: who this gateway is, and how it tells the control post how it is (docs/fleet.md).

- ``identity``: a stable id kept in the state dir, renewed when the image was cloned to another machine.
- ``settings``: the ``[fleet]`` config section.
- ``health``: the versioned status document (schema ``gateway-status/1``) and the gateway's own readings.
- ``duplicates``: another running gateway under this name, latched so it does not flap.
- ``publisher``: the retained status on MQTT, the Last Will, the duplicate watch.
- ``cli``: ``gateway fleet``, every gateway's health at a glance.
"""
