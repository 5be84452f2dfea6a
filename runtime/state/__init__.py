"""Durable run state: journal events, the store interface and its backends."""
