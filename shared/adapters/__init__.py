"""Adapters: Azure SDK clients behind the ports. The only package that imports Azure SDKs."""
