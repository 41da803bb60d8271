"""Turning replay evidence into ranked findings with fixes."""
