"""Model providers behind one streaming protocol (see `worker.providers.base`)."""
