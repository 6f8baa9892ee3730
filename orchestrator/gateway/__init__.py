"""orch serve: one OpenAI-compatible endpoint that starts, swaps and stops profiles."""
