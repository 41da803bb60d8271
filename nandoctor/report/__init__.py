"""Rendering scan reports: terminal text and JSON."""
