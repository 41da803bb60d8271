"""Running a model's forward and backward passes with numeric checks."""
