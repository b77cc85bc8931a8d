"""The puppet backend: 2D skeletal animation of the character image on CPU (see backend.py)."""
from farm.backends.puppet.backend import PuppetBackend

__all__ = ["PuppetBackend"]
