"""``edgefair demo``: convert, verify, compare, bundle and serve the models shipped in
``demo/models`` on the bundled Adult data. Works from an installed package."""

from edgefair.demo.run import run_demo

__all__ = ["run_demo"]
