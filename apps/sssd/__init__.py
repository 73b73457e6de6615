"""SSSD: diffusion imputation and forecasting of multivariate series with S4 denoisers."""
