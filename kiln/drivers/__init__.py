"""Drivers: the seam to a container engine (see base.py for the protocol).

``kiln.drivers.docker.DockerDriver`` talks to a Docker engine; ``kiln.drivers.fake.FakeDriver``
is an in-memory fake for tests of the layers above. Import them from their modules: the Docker
SDK is loaded only by whoever uses the Docker driver.
"""

from kiln.drivers.base import Driver, DriverEvent, LogLine

__all__ = ["Driver", "DriverEvent", "LogLine"]
