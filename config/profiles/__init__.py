"""The device profiles shipped with the gateway.

This folder installs as the package ``gateway.profile_files`` (see pyproject.toml), so that
``importlib.resources`` finds the profiles after any kind of install: a wheel, a Debian
package, an editable checkout. It holds no code.
"""
