"""nmcore: real-time acquisition and reaction-time measurement for neuromuscular labs."""

__version__ = "0.1.0"

__all__ = ["__version__"]
