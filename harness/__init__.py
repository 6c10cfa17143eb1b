"""mmunlearn: benchmark harness for machine unlearning in multimodal LLMs. Layers: core < (tasks, methods) < embedded < app."""
