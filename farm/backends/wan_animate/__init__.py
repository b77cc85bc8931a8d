"""The Wan2.2-Animate backend (diffusers WanAnimatePipeline)."""
from farm.backends.wan_animate.backend import WanAnimateBackend

__all__ = ["WanAnimateBackend"]
