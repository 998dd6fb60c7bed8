"""The LLM adapter: any OpenAI-compatible server through langchain-openai."""
