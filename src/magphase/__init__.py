"""magphase: generative modelling of complex-valued (magnitude + phase) brain MRI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("magphase")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
