"""Memory model: tensors, placement, KV cache, compute buffers, per-device budgets."""
