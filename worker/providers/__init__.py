"""Model providers behind one streaming protocol (see `runcast.worker.providers.base`)."""
