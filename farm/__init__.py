"""motion-farm: a render farm for motion-controlled character animation."""

__version__ = "0.1.0"
