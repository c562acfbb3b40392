"""`modelgate bench`: load generators for LLM serving (`bench llm`) and any KServe v2 model (`bench tensor`)."""
