"""feedback: the SQLite store of conversations, ratings, rankings and model versions.

Imports no torch.
"""
