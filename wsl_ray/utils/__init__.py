"""Small helpers without domain knowledge: atomic writes and path handling."""
