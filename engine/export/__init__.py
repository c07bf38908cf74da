"""Writing a model in another program's format: `gguf`, a llama-architecture GGUF file
for llama.cpp and Ollama. Reading model files is engine/loading/'s job."""
