"""tokzoo-baselines: a tokzoo plugin."""
__version__ = "0.1.0"
