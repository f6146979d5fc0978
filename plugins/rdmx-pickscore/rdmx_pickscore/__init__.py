"""rdmx-pickscore: the PickScore text-image preference metric for rdmx evaluations."""

__version__ = "0.1.0"
