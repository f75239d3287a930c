"""Wire formats: how stream entries become bytes for a viewer (SSE frames, WebSocket messages) and the lean SSE
response that moves them. Every format encodes an entry once and shares the bytes between all viewers."""
