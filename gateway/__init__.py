"""The runcast gateway: a stateless FastAPI app that creates runs and fans their streams out to viewers."""
