"""The shim Beam's ``--setup_file`` needs: remote workers install this package from it. The metadata is in
pyproject.toml."""

from setuptools import setup

setup()
