"""Code shared by runcast's worker and gateway: event model, Redis layout, stream log, settings, tokens."""
