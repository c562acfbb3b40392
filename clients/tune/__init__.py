"""`modelgate tune`: serve an LLM with candidate engine settings, measure each with `bench llm`, keep the best."""
