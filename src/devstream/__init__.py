"""DevStream: a local-first task and memory system for AI-assisted development."""

from devstream.app import DevStream
from devstream.config import Settings, load_settings
from devstream.errors import DevStreamError

__all__ = ["DevStream", "DevStreamError", "Settings", "load_settings"]
