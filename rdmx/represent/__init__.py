"""Representation axis: encoders, the battery, balancers."""
