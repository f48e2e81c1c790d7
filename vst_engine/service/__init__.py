"""The engine as a local service for hosts that cannot import torch (OpenFX plugins, farms)."""
