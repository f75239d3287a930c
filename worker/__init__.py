"""The runcast worker: runs agents under arq and publishes every StreamingEvent to the run's Redis stream."""
