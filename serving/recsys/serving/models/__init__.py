"""What model versions serve: the model-store artifact readers, the bundle, hot swap and fleet-wide rollout."""
