"""orch: declarative, budget-checked launcher for llama.cpp, ik_llama.cpp and vLLM."""

__version__ = "0.1.0"
