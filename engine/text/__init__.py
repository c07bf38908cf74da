"""Text around the engine's token ids: tokenizers, streaming detokenization, chat templates.

`tokenizer` encodes and decodes with a model's own tokenizer (tokenizers or
sentencepiece), `detokenizer` turns a growing sequence of ids into text pieces,
`sentencepiece_proto` reads and edits `tokenizer.model` files, and `chat_template`
renders a conversation with the model's Jinja template. Reading them from a model
directory or GGUF file is engine/loading/'s job.
"""
