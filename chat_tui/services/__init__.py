"""Glue between the app and the engine, the feedback store and the trainer.

Services hold no Textual widgets: screens call them and render what they return.
"""
