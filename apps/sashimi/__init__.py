"""SaShiMi raw-audio generation and Speech Commands classification/evaluation."""
