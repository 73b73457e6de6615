"""Resolution-agnostic image classification with S4ND: train at one resolution, test at others."""
