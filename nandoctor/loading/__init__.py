"""Reading saved models and data files."""
