"""Sending: the HTTP client, the worker pool, the rate limiter, backoff and TLS."""
