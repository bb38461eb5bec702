"""Examples that run beside the identity provider: the demo relying parties and their launcher."""
