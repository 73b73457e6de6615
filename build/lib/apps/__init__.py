"""ssm-suite applications, each a LightningModule + LightningDataModule driven by the ``ssm`` CLI."""
