"""Small helpers without domain knowledge: atomic writes, path handling, Markdown tables."""
