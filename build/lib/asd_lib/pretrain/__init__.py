"""Self-supervised pre-training of the audio encoders on a synthetic corpus."""
