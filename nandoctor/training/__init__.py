"""Replaying optimizer steps to catch faults that appear only while fitting."""
