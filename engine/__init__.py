"""engine: the model runtime.

Model configs and code, weight loading (HF safetensors directories, GGUF files), tokenizers,
chat templates, sampling, the KV cache and the continuous-batching engine. It works on
token ids and text; it knows nothing of SQLite or Textual. This `__init__` imports nothing
heavy so that `engine.errors` can be imported without torch.
"""
