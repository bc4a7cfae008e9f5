"""Bridges to other libraries, each imported only when used (torch is optional)."""
