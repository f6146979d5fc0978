"""rdmx encoder preset: the DreamSim ensemble."""
