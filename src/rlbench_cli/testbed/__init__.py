"""The CPU testbed: a synthetic verifiable arithmetic task and a tiny locally built Llama model."""
