"""Test harness: a throwaway redis-server, real gateway/worker processes, and SSE/WebSocket readers."""
