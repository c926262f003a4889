"""grand-engine: the GranD grounded vision-language annotation pipeline as a resumable data engine."""

__version__ = "0.1.0"
