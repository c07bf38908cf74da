"""The chat app's widgets, one per module. Each posts its own messages; screens react."""
