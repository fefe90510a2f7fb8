"""The training loop and what it calls: trainer, monitors, losses, optimizers, precision."""
