"""engine: the model runtime.

It works on token ids and text; it knows nothing of SQLite or Textual. At the top, the
continuous-batching core: `engine` (LLMEngine), `scheduler`, `block_manager`, `sequence`,
`runner` (the only code that touches the cache tensors), `sampling`/`sampling_ops`,
`graphed_decode` (CUDA graphs), `streaming` (a thread-safe front), and what every part
shares (`config`, `bundle`, `devices`, `errors`, `module_changes`). Beside it:

- models/: one file per architecture (Llama family, PaLM) and the registry;
- loading/: HF directories, GGUF files, the model store, the default model;
- text/: tokenizers, streaming detokenization, chat templates;
- kernels/: the C++ CPU kernels, the fast linear layers, quantized weights;
- export/: writing a model as GGUF.

This `__init__` imports nothing heavy so that `engine.errors` can be imported without torch.
"""
