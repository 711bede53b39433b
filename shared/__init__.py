"""Application package of the Update Manager automation Functions app."""
