"""Entry points: one func.Blueprint per trigger family. Translate in, call a use case, translate
out. Only this package (and function_app.py) imports azure.functions."""
