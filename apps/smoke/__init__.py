"""A tiny procedural task (delayed recall) that proves the training plumbing end to end."""
