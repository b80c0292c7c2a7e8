"""Output: reports, CSV safety, masking, progress, logs and notifications."""
