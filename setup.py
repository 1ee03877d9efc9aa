"""The compiled pcap record walk (netmon/sources/_pcapwalk.c); everything else is in pyproject.toml.

``optional``: where no C compiler or Python headers are installed the install still
succeeds and netmon reads captures with the same walk in Python, only slower."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("netmon.sources._pcapwalk", ["netmon/sources/_pcapwalk.c"], optional=True)])
