"""Reliability: provider faults, load, slow and idle clients, crashes and restarts."""
